//! Coupons at catalog alone: redemptions under concurrency, replays and releases.

use chrono::{Duration, Utc};
use retail_kit::convert::timestamp;
use retail_proto::catalog::coupon_service_client::CouponServiceClient;
use retail_proto::catalog::{self as pb};
use tonic::Code;
use tonic::transport::Channel;

use crate::helpers::{TestApp, authed, spawn_app};

const MEMBER: &str = "members/0193a5c2-7b1e-7c3d-9f00-000000000001";

fn coupons(app: &TestApp) -> CouponServiceClient<Channel> {
    CouponServiceClient::new(app.channel.clone())
}

async fn create(app: &TestApp, kind: pb::coupon::Kind, code: &str, cap: i64) -> pb::Coupon {
    coupons(app)
        .create_coupon(authed(pb::CreateCouponRequest {
            coupon: Some(pb::Coupon {
                display_name: "Ten off".into(),
                kind: kind.into(),
                code: code.into(),
                usage_cap: cap,
                percent_off_bp: 1_000,
                start_time: Some(timestamp(Utc::now() - Duration::hours(1))),
                end_time: Some(timestamp(Utc::now() + Duration::hours(1))),
                ..Default::default()
            }),
            request_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
}

async fn redeem(
    client: &CouponServiceClient<Channel>,
    order: &str,
    code: &str,
    member: &str,
) -> Result<pb::CouponRedemption, tonic::Status> {
    client
        .clone()
        .redeem_coupon(authed(pb::RedeemCouponRequest {
            order_id: order.into(),
            code: code.into(),
            member: member.into(),
        }))
        .await
        .map(|r| r.into_inner())
}

/// Redeems `code` for `n` orders at once; how many got it.
async fn race(app: &TestApp, n: usize, code: &str, member: &str) -> usize {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (client, code, member) = (coupons(app), code.to_owned(), member.to_owned());
            tokio::spawn(async move { redeem(&client, &format!("order-{i}"), &code, &member).await })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => won += 1,
            Err(status) => assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}"),
        }
    }
    won
}

#[tokio::test]
async fn a_shared_code_is_redeemed_at_most_its_cap_and_a_release_gives_a_use_back() {
    let app = spawn_app().await;
    let coupon = create(&app, pb::coupon::Kind::Shared, "TEN-OFF", 3).await;

    assert_eq!(race(&app, 40, "ten-off", "").await, 3);

    let client = coupons(&app);
    let get = || {
        let mut client = client.clone();
        let name = coupon.name.clone();
        async move {
            client
                .get_coupon(authed(pb::GetCouponRequest { name }))
                .await
                .unwrap()
                .into_inner()
        }
    };
    assert_eq!(get().await.used_count, 3);
    // A replay of a winning order answers its redemption; releasing twice gives
    // one use back.
    let mut won = None;
    for i in 0..40 {
        if let Ok(r) = redeem(&client, &format!("order-{i}"), "TEN-OFF", "").await {
            won = Some(r);
            break;
        }
    }
    let won = won.unwrap();
    assert_eq!(won.state, pb::coupon_redemption::State::Active as i32);
    for _ in 0..2 {
        let released = client
            .clone()
            .release_coupon_redemption(authed(pb::ReleaseCouponRedemptionRequest {
                order_id: won.order_id.clone(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(released.state, pb::coupon_redemption::State::Released as i32);
    }
    assert_eq!(get().await.used_count, 2);
    redeem(&client, "order-new", "TEN-OFF", "").await.unwrap();
    assert_eq!(get().await.used_count, 3);
    // A released order's redemption stays released; an order without one is
    // NOT_FOUND.
    let again = redeem(&client, &won.order_id, "TEN-OFF", "").await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    let none = client
        .clone()
        .release_coupon_redemption(authed(pb::ReleaseCouponRedemptionRequest {
            order_id: "never".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(none.code(), Code::NotFound);
}

#[tokio::test]
async fn a_member_code_is_redeemed_once_and_only_by_its_member() {
    let app = spawn_app().await;
    let coupon = create(&app, pb::coupon::Kind::SingleUse, "", 0).await;
    let issued = coupons(&app)
        .issue_coupon_codes(authed(pb::IssueCouponCodesRequest {
            coupon: coupon.name.clone(),
            members: vec![MEMBER.into()],
        }))
        .await
        .unwrap()
        .into_inner();
    let code = issued.codes[0].code.clone();
    // Issuing again gives the member the same code.
    let again = coupons(&app)
        .issue_coupon_codes(authed(pb::IssueCouponCodesRequest {
            coupon: coupon.name.clone(),
            members: vec![MEMBER.into()],
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.codes[0].code, code);

    let other = redeem(
        &coupons(&app),
        "o-x",
        &code,
        "members/0193a5c2-7b1e-7c3d-9f00-000000000002",
    )
    .await
    .unwrap_err();
    assert!(other.message().contains("another member"), "{}", other.message());
    assert_eq!(race(&app, 25, &code, MEMBER).await, 1);
}

#[tokio::test]
async fn redemptions_check_their_input() {
    let app = spawn_app().await;
    let status = redeem(&coupons(&app), "", "x", "people/1").await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let mut fields = crate::helpers::violated_fields(&status);
    fields.sort();
    assert_eq!(fields, ["code", "member", "order_id"]);
}
