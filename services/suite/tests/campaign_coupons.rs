//! Coupon campaigns across `retail-suite up`'s wiring: a win-back campaign aimed at
//! sleeping members of some regions with e-mail consent gets each contacted
//! member's single-use code from catalog, 20% of the audience is held back as a
//! control group, two contacted members order with their codes and get the
//! discount while one control member buys without; the campaign report and
//! analytics' wake-up rate (from the campaign's decisions on membership's log and
//! the orders on orders' log) equal the figures computed here. On a fresh database per service (PostgreSQL when
//! `RETAIL_TEST_DATABASE_URL` is set).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose
// Amounts in minor units are written major_minor (123_45 = 123.45).
#![allow(clippy::inconsistent_digit_grouping)]

use std::collections::{HashMap, HashSet};

use chrono::{Duration, Utc};
use retail_kit::convert::timestamp;
use retail_proto::analytics::analytics_service_client::AnalyticsServiceClient;
use retail_proto::analytics::{self as apb};
use retail_proto::catalog::coupon_service_client::CouponServiceClient;
use retail_proto::catalog::{self as cpb};
use retail_proto::membership::engagement_service_client::EngagementServiceClient;
use retail_proto::membership::loyalty_service_client::LoyaltyServiceClient;
use retail_proto::membership::membership_service_client::MembershipServiceClient;
use retail_proto::membership::segment_rule::Rule as R;
use retail_proto::membership::{self as mpb};
use retail_proto::orders::orders_service_client::OrdersServiceClient;
use retail_proto::orders::{self as opb};

mod common;
use common::{authed, channel, eur};

/// Every seeded SKU's list price: 100.00 EUR.
const PRICE: i64 = 100_00;
const MEMBERS: usize = 150;
/// Members 0..CONSENTED grant email; the others never decided.
const CONSENTED: usize = 140;
/// The campaign's regions.
const REGIONS: [&str; 3] = ["DE-BE", "DE-HH", "DE-BY"];

/// Days before now of member `i`'s only purchase: with the 3-month lifecycle
/// window, 240 days ago leaves it sleeping, 420 days lost and 10 days active; some
/// never bought (prospects).
fn bought_days_ago(i: usize) -> Option<i64> {
    match i % 10 {
        2 => Some(420),
        5 => None,
        8 => Some(10),
        _ => Some(240),
    }
}

/// The code in a rendered `Your code: {coupon_code}.` message.
fn code_in(body: &str) -> &str {
    body.strip_prefix("Your code: ")
        .and_then(|rest| rest.strip_suffix('.'))
        .unwrap_or_else(|| panic!("unexpected message {body:?}"))
}

#[tokio::test]
async fn a_coupon_campaign_gives_each_contacted_member_its_own_code_which_discounts_its_order() {
    let suite = common::start("campaign-coupons").await;
    let admin = suite.admin.clone();
    let skus = suite.seed_catalog(1, Some(PRICE), &[]).await;
    let (_, members) = retail_suite::seed::register_members(channel(suite.membership), &admin, MEMBERS as u64, 1)
        .await
        .unwrap();
    let membership = MembershipServiceClient::new(channel(suite.membership));
    for (i, member) in members.iter().enumerate() {
        // The last consented ones revoke again: their latest decision counts.
        let decisions: &[bool] = match i {
            i if i >= CONSENTED => &[],
            i if i >= CONSENTED - 2 => &[true, false],
            _ => &[true],
        };
        for granted in decisions {
            membership
                .clone()
                .set_consent(authed(
                    &admin,
                    mpb::SetConsentRequest {
                        name: member.clone(),
                        consent: Some(mpb::Consent {
                            channel: mpb::ConsentChannel::Email.into(),
                            granted: *granted,
                            source: "app".into(),
                            update_time: None,
                        }),
                    },
                ))
                .await
                .unwrap();
        }
    }
    // Each member's past: its region, and the purchase that sets its lifecycle state.
    let mut loyalty = LoyaltyServiceClient::new(channel(suite.membership));
    let mut audience: HashSet<&String> = HashSet::new();
    for (i, member) in members.iter().enumerate() {
        let region = membership
            .clone()
            .get_member(authed(
                &admin,
                mpb::GetMemberRequest {
                    name: member.clone(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .region;
        if let Some(days) = bought_days_ago(i) {
            loyalty
                .record_purchase(authed(
                    &admin,
                    mpb::RecordPurchaseRequest {
                        name: member.clone(),
                        purchase: Some(mpb::Purchase {
                            order_id: format!("history-{i}"),
                            amount: eur(50_00),
                            occur_time: Some(timestamp(Utc::now() - Duration::days(days))),
                            channel: "store".into(),
                        }),
                        refund: false,
                        request_id: String::new(),
                    },
                ))
                .await
                .unwrap();
        }
        let sleeping = bought_days_ago(i) == Some(240);
        if i < CONSENTED - 2 && sleeping && REGIONS.contains(&region.as_str()) {
            audience.insert(member);
        }
    }
    assert!(audience.len() >= 30, "{} members in the audience", audience.len());

    let mut coupons = CouponServiceClient::new(channel(suite.catalog));
    let coupon = coupons
        .create_coupon(authed(
            &admin,
            cpb::CreateCouponRequest {
                coupon: Some(cpb::Coupon {
                    display_name: "Welcome back".into(),
                    kind: cpb::coupon::Kind::SingleUse.into(),
                    percent_off_bp: 10_00,
                    start_time: Some(timestamp(Utc::now() - Duration::days(1))),
                    end_time: Some(timestamp(Utc::now() + Duration::days(30))),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();

    let mut engagement = EngagementServiceClient::new(channel(suite.membership));
    let segment = engagement
        .create_segment(authed(
            &admin,
            mpb::CreateSegmentRequest {
                segment: Some(mpb::Segment {
                    display_name: "sleeping in Germany".into(),
                    rule: Some(mpb::SegmentRule {
                        rule: Some(R::All(mpb::RuleGroup {
                            rules: vec![
                                mpb::SegmentRule {
                                    rule: Some(R::Lifecycle(mpb::LifecycleCondition {
                                        states: vec![mpb::LifecycleState::Sleeping.into()],
                                    })),
                                },
                                mpb::SegmentRule {
                                    rule: Some(R::Region(mpb::RegionCondition {
                                        regions: REGIONS.iter().map(|r| (*r).to_owned()).collect(),
                                    })),
                                },
                            ],
                        })),
                    }),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let now = Utc::now() - Duration::seconds(1);
    let mut spec = mpb::Campaign {
        display_name: "welcome back".into(),
        segment: segment.name.clone(),
        channel: mpb::ConsentChannel::Email.into(),
        trigger: mpb::CampaignTrigger::Planned.into(),
        send_time: Some(timestamp(now)),
        action: mpb::CampaignAction::Coupon.into(),
        message_template: "Your code: {coupon_code}.".into(),
        control_share_bp: 20_00,
        cost_per_contact: eur(1_00),
        start_time: Some(timestamp(now - Duration::hours(1))),
        end_time: Some(timestamp(now + Duration::days(7))),
        ..Default::default()
    };
    // A coupon campaign names its coupon.
    let refused = engagement
        .create_campaign(authed(
            &admin,
            mpb::CreateCampaignRequest {
                campaign: Some(spec.clone()),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        retail_testkit::tokens::violated_fields(&refused),
        vec!["campaign.coupon".to_owned()]
    );
    spec.coupon = coupon.name.clone();
    let campaign = engagement
        .create_campaign(authed(
            &admin,
            mpb::CreateCampaignRequest {
                campaign: Some(spec),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(campaign.coupon, coupon.name);
    engagement
        .schedule_campaign(authed(
            &admin,
            mpb::ScheduleCampaignRequest {
                name: campaign.name.clone(),
            },
        ))
        .await
        .unwrap();

    let app = suite.membership_app.clone();
    let contacted_count = app.run_campaigns(now).await.unwrap();
    // A second run contacts nobody again.
    assert_eq!(app.run_campaigns(now).await.unwrap(), 0);

    let messages = engagement
        .list_messages(authed(
            &admin,
            mpb::ListMessagesRequest {
                parent: campaign.name.clone(),
                page_size: 500,
                page_token: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .messages;
    assert_eq!(messages.len() as u64, contacted_count);
    let mut codes: HashMap<String, String> = HashMap::new();
    for m in &messages {
        assert!(audience.contains(&m.member), "{} is not in the audience", m.member);
        let code = code_in(&m.body).to_owned();
        assert!(!code.is_empty());
        assert!(
            codes.insert(m.member.clone(), code).is_none(),
            "{} contacted twice",
            m.member
        );
    }
    let distinct: HashSet<&String> = codes.values().collect();
    assert_eq!(distinct.len(), codes.len(), "codes are per member");
    let campaign = engagement
        .get_campaign(authed(
            &admin,
            mpb::GetCampaignRequest {
                name: campaign.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    // Every member of the audience was decided: contacted (with a code) or control.
    assert_eq!(campaign.contacted_count, codes.len() as i64);
    assert_eq!(campaign.contacted_count + campaign.control_count, audience.len() as i64);
    assert!(
        campaign.contacted_count > 0 && campaign.control_count > 0,
        "{} draws at 20 %",
        audience.len()
    );
    // Each member's code is the one catalog holds for it; control members have none.
    let reached: Vec<String> = codes.keys().cloned().collect();
    let control: Vec<String> = audience
        .iter()
        .filter(|m| !codes.contains_key(**m))
        .map(|m| (*m).clone())
        .collect();
    let issued = coupons
        .issue_coupon_codes(authed(
            &admin,
            cpb::IssueCouponCodesRequest {
                coupon: coupon.name.clone(),
                members: reached.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    for c in &issued.codes {
        assert_eq!(codes[&c.member], c.code);
    }
    let got = coupons
        .get_coupon(authed(
            &admin,
            cpb::GetCouponRequest {
                name: coupon.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.issued_count, reached.len() as i64, "control members got no code");

    // Two contacted members order with their codes and pay; one control member
    // buys without a code.
    let orders = OrdersServiceClient::new(channel(suite.orders));
    let buy = async |buyer: &String, code: Option<&String>, request_id: &str| -> i64 {
        let order = orders
            .clone()
            .place_order(authed(
                &admin,
                opb::PlaceOrderRequest {
                    order: Some(opb::Order {
                        member: buyer.clone(),
                        channel: opb::OrderChannel::Online.into(),
                        coupon_code: code.cloned().unwrap_or_default(),
                        lines: vec![opb::OrderLine {
                            sku: skus[0].clone(),
                            quantity: 1,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    request_id: request_id.into(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let discount: i64 = order
            .lines
            .iter()
            .flat_map(|l| &l.discounts)
            .filter(|d| d.rule == coupon.name)
            .map(|d| d.amount.as_ref().map_or(0, |m| m.amount_minor))
            .sum();
        let total = order.total.as_ref().unwrap().amount_minor;
        if code.is_some() {
            assert_eq!(discount, 10_00);
            assert_eq!(total, PRICE - 10_00);
        } else {
            assert_eq!((discount, total), (0, PRICE));
        }
        orders
            .clone()
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
        total
    };
    let (first, second, control_buyer) = (&reached[0], &reached[1], &control[0]);
    let with_code = buy(first, Some(&codes[first]), "campaign-order-1").await
        + buy(second, Some(&codes[second]), "campaign-order-2").await;
    let without_code = buy(control_buyer, None, "campaign-order-control").await;

    // The report counts the order once membership has it from orders' log.
    let mut report = None;
    for _ in 0..400 {
        let r = engagement
            .get_campaign_report(authed(
                &admin,
                mpb::GetCampaignReportRequest {
                    name: campaign.name.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        if (r.responded, r.control_responded) == (2, 1) {
            report = Some(r);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let r = report.expect("the paid order never reached the campaign report");
    let n = reached.len() as i64;
    let k = control.len() as i64;
    assert_eq!((r.reached, r.responded, r.response_rate_bp), (n, 2, 20_000 / n));
    assert_eq!(
        (r.control, r.control_responded, r.control_response_rate_bp),
        (k, 1, 10_000 / k)
    );
    assert_eq!(r.revenue.unwrap().amount_minor, with_code);
    assert_eq!(r.control_revenue.unwrap().amount_minor, without_code);
    // What the reached members would have spent at the control group's rate.
    let incremental = with_code - without_code * n / k;
    assert_eq!(r.incremental_revenue.unwrap().amount_minor, incremental);
    assert_eq!(r.cost.unwrap().amount_minor, n * 1_00);
    assert_eq!(r.roi_bp, Some((incremental - n * 1_00) * 10_000 / (n * 1_00)));

    // Analytics: the sleeping members contacted, of whom the buyer bought again
    // within the attribution window, and the control member who bought.
    let mut analytics = AnalyticsServiceClient::new(channel(suite.analytics));
    let period = Some(apb::Period {
        start_time: Some(timestamp(now - Duration::hours(1))),
        end_time: Some(timestamp(now + Duration::hours(1))),
    });
    let mut sticky = None;
    for _ in 0..400 {
        let s = analytics
            .get_stickiness(authed(&admin, apb::GetStickinessRequest { period, window_days: 0 }))
            .await
            .unwrap()
            .into_inner();
        let (wake, control_wake) = (s.wake_up.unwrap(), s.wake_up_control.unwrap());
        assert!(wake.members <= n && wake.bought_again <= 2, "{wake:?}");
        if (
            wake.members,
            wake.bought_again,
            control_wake.members,
            control_wake.bought_again,
        ) == (n, 2, k, 1)
        {
            sticky = Some(s);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let s = sticky.expect("analytics never counted the campaign's decisions and the order");
    let wake = s.wake_up.unwrap();
    assert_eq!((wake.members, wake.bought_again), (n, 2));
    assert_eq!(wake.rate, 2.0 / n as f64);
    let control_wake = s.wake_up_control.unwrap();
    assert_eq!(
        (control_wake.members, control_wake.bought_again, control_wake.rate),
        (k, 1, 1.0 / k as f64)
    );
    // Lost members were not in the segment.
    assert_eq!(s.reactivation.unwrap().members, 0);
    assert_eq!(s.reactivation_control.unwrap().members, 0);
}
