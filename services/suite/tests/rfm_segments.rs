//! RFM segments across `retail-suite up`'s wiring: paid orders reach analytics
//! over orders' log, analytics scores the members and publishes `MemberScored`,
//! membership follows analytics' log, and a segment over the RFM segment counts
//! the members. On a fresh database per service (PostgreSQL when
//! `RETAIL_TEST_DATABASE_URL` is set).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose
// Amounts in minor units are written major_minor (123_45 = 123.45).
#![allow(clippy::inconsistent_digit_grouping)]

use retail_proto::catalog::pricing_service_client::PricingServiceClient;
use retail_proto::catalog::{self as cpb};
use retail_proto::common::Money;
use retail_proto::membership::engagement_service_client::EngagementServiceClient;
use retail_proto::membership::segment_rule::Rule as R;
use retail_proto::membership::{self as mpb};
use retail_proto::orders::orders_service_client::OrdersServiceClient;
use retail_proto::orders::{self as opb};

mod common;
use common::{authed, channel};

const PRICE: i64 = 100_00;

fn eur(amount_minor: i64) -> Option<Money> {
    Some(Money {
        currency_code: "EUR".into(),
        amount_minor,
    })
}

#[tokio::test]
async fn paid_orders_become_rfm_segments_that_membership_segments_count() {
    let suite = common::start("rfm-segments").await;
    let admin = suite.admin.clone();
    let skus = retail_suite::seed::seed_catalog(channel(suite.catalog), &admin, 1, 1, 1_000, 1)
        .await
        .unwrap();
    PricingServiceClient::new(channel(suite.catalog))
        .set_list_price(authed(
            &admin,
            cpb::SetListPriceRequest {
                sku: skus[0].clone(),
                price: eur(PRICE),
            },
        ))
        .await
        .unwrap();
    let (_, members) = retail_suite::seed::register_members(channel(suite.membership), &admin, 3, 1)
        .await
        .unwrap();
    let (big, small, none) = (&members[0], &members[1], &members[2]);

    // big: two orders of 2 units (400.00); small: one of 1 unit (100.00).
    let mut orders = OrdersServiceClient::new(channel(suite.orders));
    for (i, (member, quantity)) in [(big, 2), (big, 2), (small, 1)].into_iter().enumerate() {
        let order = orders
            .place_order(authed(
                &admin,
                opb::PlaceOrderRequest {
                    order: Some(opb::Order {
                        member: member.clone(),
                        channel: opb::OrderChannel::Online.into(),
                        lines: vec![opb::OrderLine {
                            sku: skus[0].clone(),
                            quantity,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    request_id: format!("rfm-order-{i}"),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        orders
            .pay_order(authed(
                &admin,
                opb::PayOrderRequest {
                    name: order.name.clone(),
                    payment: Some(opb::Payment {
                        reference: format!("psp-{}", order.name),
                        amount: order.total.clone(),
                        pay_time: None,
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap();
    }

    // Once analytics has the three payments: R 0 days for both (a tie, both
    // score 1 = the mean, high); F 2 vs 1 -> 3 vs 1, mean 2; M 400.00 vs 100.00 ->
    // 3 vs 1, mean 2 (whatever shipping adds, big spends more). big is a
    // champion, small new_low_spend; nobody is overdue.
    let id = |name: &str| name.trim_start_matches("members/").to_owned();
    let mut now = 0;
    for _ in 0..400 {
        now = chrono::Utc::now().timestamp();
        let (rfm, _) = suite.analytics_app.rfm(now, 365).await.unwrap();
        let figures: Vec<(String, i64)> = rfm.iter().map(|m| (m.member.clone(), m.frequency)).collect();
        if figures.contains(&(id(big), 2)) && figures.contains(&(id(small), 1)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    suite.analytics_app.publish_scores(now).await.unwrap();

    let engagement = EngagementServiceClient::new(channel(suite.membership));
    let segment = |segments: &[&str]| {
        let request = authed(
            &admin,
            mpb::CreateSegmentRequest {
                segment: Some(mpb::Segment {
                    display_name: "rfm".into(),
                    rule: Some(mpb::SegmentRule {
                        rule: Some(R::RfmSegment(mpb::RfmSegmentCondition {
                            segments: segments.iter().map(|s| (*s).to_owned()).collect(),
                        })),
                    }),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        );
        let mut client = engagement.clone();
        async move { client.create_segment(request).await.unwrap().into_inner().name }
    };
    let champions = segment(&["champion"]).await;
    let scored = segment(&["champion", "new_low_spend"]).await;
    let members_of = |name: String| {
        let request = authed(
            &admin,
            mpb::ListSegmentMembersRequest {
                name,
                page_size: 10,
                page_token: String::new(),
            },
        );
        let mut client = engagement.clone();
        async move {
            let mut names: Vec<String> = client
                .list_segment_members(request)
                .await
                .unwrap()
                .into_inner()
                .members
                .into_iter()
                .map(|m| m.name)
                .collect();
            names.sort();
            names
        }
    };
    // Membership follows analytics' log.
    let mut both = Vec::new();
    for _ in 0..400 {
        both = members_of(scored.clone()).await;
        if both.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut want = vec![big.clone(), small.clone()];
    want.sort();
    assert_eq!(both, want);
    assert!(!both.contains(none));
    assert_eq!(members_of(champions.clone()).await, vec![big.clone()]);
    let count = engagement
        .clone()
        .count_segment_members(authed(&admin, mpb::CountSegmentMembersRequest { name: champions }))
        .await
        .unwrap()
        .into_inner()
        .member_count;
    assert_eq!(count, 1);
}
