//! Quotes across `retail-suite up`'s wiring: channel-partner prices a quote from
//! the partner level's wholesale list (catalog) against the brand's range table,
//! and accepting it places one order in orders at the quote's prices (orders
//! reads the quote from channel-partner), however often it is accepted. On a
//! fresh database per service (PostgreSQL when `RETAIL_TEST_DATABASE_URL` is set).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose
// Amounts in minor units are written major_minor (123_45 = 123.45).
#![allow(clippy::inconsistent_digit_grouping)]

use retail_proto::orders::orders_service_client::OrdersServiceClient;
use retail_proto::orders::{self as opb};
use retail_proto::partner::opportunity_service_client::OpportunityServiceClient;
use retail_proto::partner::quote_service_client::QuoteServiceClient;
use retail_proto::partner::{self as ppb};
use tonic::Code;
use tonic::transport::Channel;

mod common;
use common::{authed, channel};

const PARTNER: &str = "acme-0";

struct World {
    orders: OrdersServiceClient<Channel>,
    quotes: QuoteServiceClient<Channel>,
    opportunities: OpportunityServiceClient<Channel>,
    admin: String,
    skus: Vec<String>,
    _suite: common::Running,
}

impl World {
    async fn start() -> Self {
        let suite = common::start("quotes").await;
        let admin = suite.admin.clone();
        // Level `registered` (a new partner's) lists them at 100.00 and 40.00.
        let skus = suite.seed_catalog(2, None, &[100_00, 40_00]).await;
        let w = World {
            orders: OrdersServiceClient::new(channel(suite.orders)),
            quotes: QuoteServiceClient::new(channel(suite.partner)),
            opportunities: OpportunityServiceClient::new(channel(suite.partner)),
            admin,
            skus,
            _suite: suite,
        };
        // Class A, new customers, any volume: 5% to 20% off list.
        w.quotes
            .clone()
            .set_price_range(authed(
                &w.admin,
                ppb::SetPriceRangeRequest {
                    price_range: Some(ppb::PriceRange {
                        level: "registered".into(),
                        customer_class: ppb::CustomerClass::A.into(),
                        relationship: ppb::CustomerRelationship::New.into(),
                        volume_from_minor: 0,
                        min_discount_bp: 500,
                        max_discount_bp: 2_000,
                        ..Default::default()
                    }),
                },
            ))
            .await
            .unwrap();
        w
    }

    async fn opportunity(&self, customer: &str) -> String {
        self.opportunities
            .clone()
            .create_opportunity(authed(
                &self.admin,
                ppb::CreateOpportunityRequest {
                    parent: format!("partners/{PARTNER}"),
                    opportunity: Some(ppb::Opportunity {
                        title: format!("Pumps for {customer}"),
                        customer: Some(ppb::Customer {
                            display_name: customer.into(),
                            region: "north".into(),
                            tax_id: String::new(),
                        }),
                        amount_minor: 1_000_00,
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .name
    }

    async fn quote(&self, opportunity: &str, lines: &[(usize, i64, i64)]) -> ppb::Quote {
        self.quotes
            .clone()
            .create_quote(authed(
                &self.admin,
                ppb::CreateQuoteRequest {
                    parent: format!("partners/{PARTNER}"),
                    quote: Some(ppb::Quote {
                        opportunity: opportunity.into(),
                        customer_class: ppb::CustomerClass::A.into(),
                        relationship: ppb::CustomerRelationship::New.into(),
                        expected_volume_minor: 10_000_00,
                        lines: lines
                            .iter()
                            .map(|(i, quantity, unit)| ppb::QuoteLine {
                                sku: self.skus[*i].clone(),
                                quantity: *quantity,
                                unit_price_minor: *unit,
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
    }

    async fn accept(&self, name: &str) -> Result<ppb::Quote, tonic::Status> {
        self.quotes
            .clone()
            .accept_quote(authed(&self.admin, ppb::AcceptQuoteRequest { name: name.into() }))
            .await
            .map(|r| r.into_inner())
    }

    async fn orders_of_partner(&self) -> Vec<opb::Order> {
        self.orders
            .clone()
            .list_orders(authed(
                &self.admin,
                opb::ListOrdersRequest {
                    partner_id: PARTNER.into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .orders
    }
}

fn amount(m: &Option<retail_proto::common::Money>) -> i64 {
    m.as_ref().map_or(0, |m| m.amount_minor)
}

#[tokio::test]
async fn an_accepted_quote_becomes_one_order_at_the_quotes_prices() {
    let w = World::start().await;

    // Out of range (30% off) waits for approval: accepting it places nothing.
    let held = w.quote(&w.opportunity("Initech").await, &[(0, 1, 70_00)]).await;
    assert_eq!(held.state(), ppb::QuoteState::PendingApproval);
    assert_eq!(held.lines[0].list_price_minor, 100_00, "the level's wholesale price");
    let refused = w.accept(&held.name).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(w.orders_of_partner().await.is_empty());

    // In range: issued, and accepted four times at once.
    let opportunity = w.opportunity("ACME Pumps").await;
    let q = w.quote(&opportunity, &[(0, 3, 85_00), (1, 2, 36_00)]).await;
    assert_eq!(q.state(), ppb::QuoteState::Issued);
    let tries = futures::future::join_all((0..4).map(|_| w.accept(&q.name))).await;
    let names: std::collections::HashSet<String> = tries.into_iter().map(|t| t.unwrap().order).collect();
    assert_eq!(names.len(), 1);
    let again = w.accept(&q.name).await.unwrap();
    assert_eq!(again.state(), ppb::QuoteState::Accepted);
    assert!(names.contains(&again.order));

    let orders = w.orders_of_partner().await;
    assert_eq!(orders.len(), 1, "one order, however often the quote was accepted");
    let order = &orders[0];
    assert_eq!(order.name, again.order);
    assert_eq!(order.channel(), opb::OrderChannel::Partner);
    assert_eq!(order.quote, q.name);
    assert_eq!(order.customer.as_ref().unwrap().display_name, "ACME Pumps");
    let lines: Vec<(String, i64, i64, i64)> = order
        .lines
        .iter()
        .map(|l| (l.sku.clone(), l.quantity, amount(&l.unit_price), amount(&l.discount)))
        .collect();
    assert_eq!(
        lines,
        [(w.skus[0].clone(), 3, 85_00, 0), (w.skus[1].clone(), 2, 36_00, 0)]
    );
    assert_eq!(amount(&order.total), 3 * 85_00 + 2 * 36_00);

    let won = w
        .opportunities
        .clone()
        .get_opportunity(authed(&w.admin, ppb::GetOpportunityRequest { name: opportunity }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(won.stage(), ppb::PipelineStage::Won);

    // Orders never takes a second order from the quote, nor prices from a
    // caller: placing with the quote again is refused.
    let second = w
        .orders
        .clone()
        .place_order(authed(
            &w.admin,
            opb::PlaceOrderRequest {
                order: Some(opb::Order {
                    channel: opb::OrderChannel::Partner.into(),
                    partner_id: PARTNER.into(),
                    quote: q.name.clone(),
                    lines: vec![
                        opb::OrderLine {
                            sku: w.skus[0].clone(),
                            quantity: 3,
                            ..Default::default()
                        },
                        opb::OrderLine {
                            sku: w.skus[1].clone(),
                            quantity: 2,
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }),
                request_id: "another-placement".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(second.code(), Code::FailedPrecondition);
    assert_eq!(w.orders_of_partner().await.len(), 1);
}
