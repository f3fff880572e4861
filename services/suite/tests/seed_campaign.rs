//! `retail-suite seed`'s demo campaign against the suite in process: it contacts
//! its audience once membership's campaign job runs, and its report counts the
//! purchases the seed records after the contacts, two in five reached members
//! and one in five control members. On a fresh database per service
//! (PostgreSQL when `RETAIL_TEST_DATABASE_URL` is set).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::time::Duration;

use chrono::Utc;
use retail_proto::membership::engagement_service_client::EngagementServiceClient;
use retail_proto::membership::{self as mpb};

mod common;
use common::{authed, channel};

#[tokio::test]
async fn the_demo_campaign_runs_and_its_report_counts_the_purchases_after_its_contacts() {
    let suite = common::start("seed-campaign").await;
    let admin = suite.admin.clone();
    let (_, members) = retail_suite::seed::register_members(channel(suite.membership), &admin, 30, 4)
        .await
        .unwrap();
    // Membership's campaign job, run often (its own first run is a minute away).
    let app = suite.membership_app.clone();
    let job = tokio::spawn(async move {
        loop {
            let _ = app.run_campaigns(Utc::now()).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let name = retail_suite::seed_campaign::seed_campaign(
        channel(suite.membership),
        &admin,
        &members,
        "t1",
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    job.abort();

    let mut engagement = EngagementServiceClient::new(channel(suite.membership));
    let c = engagement
        .get_campaign(authed(&admin, mpb::GetCampaignRequest { name: name.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.display_name, "Spring reactivation t1");
    assert_eq!(c.state, mpb::CampaignState::Running as i32);
    // Every seeded member is in the audience and agreed to email.
    let (reached, control) = (c.contacted_count, c.control_count);
    assert_eq!(reached + control, 30);
    assert!(reached > 0, "30 draws at 25% control: {reached}/{control}");

    let report = engagement
        .get_campaign_report(authed(&admin, mpb::GetCampaignReportRequest { name }))
        .await
        .unwrap()
        .into_inner();
    // The i-th buyer of a group pays 49.90 + 10.00 x (i mod 4).
    let bought = |n: i64, buys: fn(i64) -> bool| {
        let buyers: Vec<i64> = (0..n).filter(|i| buys(*i)).collect();
        let revenue: i64 = buyers.iter().map(|i| 4_990 + 1_000 * (i % 4)).sum();
        (buyers.len() as i64, revenue)
    };
    let (responded, revenue) = bought(reached, |i| i % 5 < 2);
    let (control_responded, control_revenue) = bought(control, |i| i % 5 == 0);
    assert_eq!((report.reached, report.control), (reached, control));
    assert_eq!(report.responded, responded);
    assert_eq!(report.control_responded, control_responded);
    assert_eq!(report.revenue.unwrap().amount_minor, revenue);
    assert_eq!(report.control_revenue.unwrap().amount_minor, control_revenue);
    assert_eq!(report.response_rate_bp, responded * 10_000 / reached);
    assert_eq!(report.cost.unwrap().amount_minor, reached * 15);
    assert_eq!(
        report.incremental_revenue.unwrap().amount_minor,
        if control == 0 {
            revenue
        } else {
            revenue - control_revenue * reached / control
        }
    );
}
