//! Partner sales across `retail-suite up`'s wiring: orders prices them from the
//! partner level's wholesale list (catalog) and channel-partner's price policy,
//! keeps on each line the rule behind each discount, and uses a special discount
//! once. On a fresh database per service (PostgreSQL when
//! `RETAIL_TEST_DATABASE_URL` is set).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose
// Amounts in minor units are written major_minor (123_45 = 123.45).
#![allow(clippy::inconsistent_digit_grouping)]

use retail_kit::convert::timestamp;
use retail_proto::orders::orders_service_client::OrdersServiceClient;
use retail_proto::orders::{self as opb};
use retail_proto::partner::price_policy_service_client::PricePolicyServiceClient;
use retail_proto::partner::{self as ppb};
use tonic::Code;
use tonic::transport::Channel;

mod common;
use common::{authed, channel};

/// `bp` basis points of `amount`, rounded down (the policy's arithmetic).
fn bp(amount: i64, bp: i64) -> i64 {
    amount * bp / 10_000
}

struct World {
    orders: OrdersServiceClient<Channel>,
    policy: PricePolicyServiceClient<Channel>,
    admin: String,
    skus: Vec<String>,
    _suite: common::Running,
}

impl World {
    async fn start() -> Self {
        let suite = common::start("pricing").await;
        let admin = suite.admin.clone();
        // Level `registered` (a new partner's, 5% ceiling) buys the first two at
        // these wholesale prices; the third is not on its list.
        let skus = suite.seed_catalog(3, None, &[123_45, 80_01]).await;
        World {
            orders: OrdersServiceClient::new(channel(suite.orders)),
            policy: PricePolicyServiceClient::new(channel(suite.partner)),
            admin,
            skus,
            _suite: suite,
        }
    }

    async fn rule(&self, kind: ppb::DiscountRuleKind, rate_bp: i32) -> String {
        let mut rule = ppb::DiscountRule {
            kind: kind.into(),
            bands: vec![ppb::DiscountBand {
                from_minor: 0,
                to_minor: 0,
                rate_bp,
            }],
            valid_from: Some(timestamp(chrono::Utc::now() - chrono::Duration::days(1))),
            ..Default::default()
        };
        if kind == ppb::DiscountRuleKind::Cumulative {
            rule.period_kind = ppb::PeriodKind::Quarter.into();
        }
        self.policy
            .clone()
            .create_discount_rule(authed(
                &self.admin,
                ppb::CreateDiscountRuleRequest {
                    discount_rule: Some(rule),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .name
    }

    async fn place(
        &self,
        partner: &str,
        lines: &[(usize, i64)],
        special: &str,
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
                        special_discount: special.into(),
                        lines: lines
                            .iter()
                            .map(|(i, q)| opb::OrderLine {
                                sku: self.skus[*i].clone(),
                                quantity: *q,
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    }),
                    request_id: request_id.into(),
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    async fn special(&self, partner: &str, reference: &str, rate_bp: i32) -> ppb::SpecialDiscount {
        self.policy
            .clone()
            .request_special_discount(authed(
                &self.admin,
                ppb::RequestSpecialDiscountRequest {
                    parent: format!("partners/{partner}"),
                    special_discount: Some(ppb::SpecialDiscount {
                        reference: reference.into(),
                        rate_bp,
                        reason: "a strategic customer".into(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
    }

    async fn get_special(&self, name: &str) -> ppb::SpecialDiscount {
        self.policy
            .clone()
            .get_special_discount(authed(
                &self.admin,
                ppb::GetSpecialDiscountRequest { name: name.into() },
            ))
            .await
            .unwrap()
            .into_inner()
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

fn amount(m: &Option<retail_proto::common::Money>) -> i64 {
    m.as_ref().map_or(0, |m| m.amount_minor)
}

/// (rule, amount) of each discount on `line`.
fn discounts(line: &opb::OrderLine) -> Vec<(String, i64)> {
    line.discounts
        .iter()
        .map(|d| (d.rule.clone(), amount(&d.amount)))
        .collect()
}

#[tokio::test]
async fn partner_sales_are_priced_from_the_wholesale_list_less_the_policys_discounts_and_a_special_discount_applies_once()
 {
    let w = World::start().await;
    // Total 2%, then cumulative 1.5% on what remains: under the 5% ceiling.
    let total = w.rule(ppb::DiscountRuleKind::Total, 200).await;
    let cumulative = w.rule(ppb::DiscountRuleKind::Cumulative, 150).await;

    let placed = w.place("acme-0", &[(0, 3), (1, 2)], "", "acme-1").await.unwrap();
    assert_eq!(placed.partner_level, "registered");
    let mut expected_total = 0;
    for (line, (wholesale, units)) in placed.lines.iter().zip([(123_45, 3), (80_01, 2)]) {
        let gross = wholesale * units;
        let first = bp(gross, 200);
        let second = bp(gross - first, 150);
        assert_eq!(amount(&line.unit_price), wholesale);
        assert_eq!(
            discounts(line),
            [(total.clone(), first), (cumulative.clone(), second)],
            "each discount names its rule"
        );
        assert_eq!(amount(&line.discount), first + second);
        assert_eq!(amount(&line.line_total), gross - first - second);
        expected_total += gross - first - second;
    }
    assert_eq!(amount(&placed.total), expected_total);
    // Read back as placed.
    let read = w
        .orders
        .clone()
        .get_order(authed(
            &w.admin,
            opb::GetOrderRequest {
                name: placed.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.lines, placed.lines);

    // A SKU not on the level's list is refused; nothing is written.
    let err = w.place("acme-0", &[(2, 1)], "", "acme-off-list").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    // A special discount above the ceiling waits for approval: refused until then.
    let asked = w.special("acme-0", "PO-77", 1_000).await;
    assert_eq!(asked.state, ppb::SpecialDiscountState::Pending as i32);
    let err = w.place("acme-0", &[(0, 1)], &asked.name, "acme-2").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    w.policy
        .clone()
        .approve_special_discount(authed(
            &w.admin,
            ppb::ApproveSpecialDiscountRequest {
                name: asked.name.clone(),
                reason: "strategic account".into(),
            },
        ))
        .await
        .unwrap();
    // Another partner's request is refused.
    let err = w
        .place("globex-0", &[(0, 1)], &asked.name, "globex-1")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // Approved: applied after the policy's discounts, on what remains.
    let with_special = w.place("acme-0", &[(0, 1)], &asked.name, "acme-2").await.unwrap();
    assert_eq!(with_special.special_discount, asked.name);
    let line = &with_special.lines[0];
    let first = bp(123_45, 200);
    let second = bp(123_45 - first, 150);
    let special = bp(123_45 - first - second, 1_000);
    assert_eq!(
        discounts(line),
        [
            (total.clone(), first),
            (cumulative.clone(), second),
            (asked.name.clone(), special)
        ]
    );
    assert_eq!(amount(&with_special.total), 123_45 - first - second - special);
    let used = w.get_special(&asked.name).await;
    assert_eq!(used.state, ppb::SpecialDiscountState::Consumed as i32);

    // The same placement again: the same order, the discount used once.
    let replay = w.place("acme-0", &[(0, 1)], &asked.name, "acme-2").await.unwrap();
    assert_eq!(replay.name, with_special.name);
    let used = w.get_special(&asked.name).await;
    let uses = used.decisions.iter().filter(|d| d.decision == "consumed").count();
    assert_eq!(uses, 1, "{used:?}");

    // Another order with the same special discount is refused and writes nothing.
    let err = w.place("acme-0", &[(0, 1)], &asked.name, "acme-3").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(w.orders_of("acme-0").await.len(), 2, "only the two placed orders");

    // An ended rule no longer applies.
    w.policy
        .clone()
        .update_discount_rule(authed(
            &w.admin,
            ppb::UpdateDiscountRuleRequest {
                discount_rule: Some(ppb::DiscountRule {
                    name: cumulative.clone(),
                    valid_until: Some(timestamp(chrono::Utc::now() - chrono::Duration::seconds(1))),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["valid_until".into()],
                }),
            },
        ))
        .await
        .unwrap();
    let later = w.place("acme-0", &[(1, 1)], "", "acme-4").await.unwrap();
    assert_eq!(discounts(&later.lines[0]), [(total.clone(), bp(80_01, 200))]);

    // Consumer sales are priced as ever: no policy, no level.
    let online = w
        .orders
        .clone()
        .place_order(authed(
            &w.admin,
            opb::PlaceOrderRequest {
                order: Some(opb::Order {
                    channel: opb::OrderChannel::Online.into(),
                    lines: vec![opb::OrderLine {
                        sku: w.skus[0].clone(),
                        quantity: 1,
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                request_id: "online-1".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(online.lines[0].discounts.is_empty());
    assert_eq!(online.partner_level, "");
    assert_eq!(amount(&online.total), amount(&online.lines[0].unit_price));

    // A special discount named by concurrent orders: exactly one uses it, the
    // others are refused and leave no order.
    let granted = w.special("acme-0", "PO-78", 300).await;
    assert_eq!(granted.state, ppb::SpecialDiscountState::Granted as i32);
    let before = w.orders_of("acme-0").await.len();
    let ids: Vec<String> = (0..4).map(|i| format!("race-{i}")).collect();
    let races = futures::future::join_all(ids.iter().map(|id| w.place("acme-0", &[(1, 1)], &granted.name, id))).await;
    let won: Vec<_> = races.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(won.len(), 1, "{races:?}");
    for lost in races.iter().filter_map(|r| r.as_ref().err()) {
        assert!(
            matches!(lost.code(), Code::FailedPrecondition | Code::Aborted),
            "{lost:?}"
        );
    }
    assert_eq!(w.orders_of("acme-0").await.len(), before + 1);
    let used = w.get_special(&granted.name).await;
    assert_eq!(used.decisions.iter().filter(|d| d.decision == "consumed").count(), 1);
    assert_eq!(
        used.decisions.last().unwrap().reason,
        won[0].name,
        "used by the winning order"
    );
}
