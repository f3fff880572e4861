//! `retail-suite seed`'s demo campaign: a segment of seeded members who agreed to
//! email, a planned campaign to it with a control group, run by membership's
//! campaign job, then purchases by some reached and some control members after
//! their contact, so that the campaign's report (and the dashboard's campaigns
//! page) shows responses, revenue and ROI.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use retail_kit::convert::timestamp;
use retail_proto::common::Money;
use retail_proto::membership::engagement_service_client::EngagementServiceClient;
use retail_proto::membership::loyalty_service_client::LoyaltyServiceClient;
use retail_proto::membership::membership_service_client::MembershipServiceClient;
use retail_proto::membership::segment_rule::Rule;
use retail_proto::membership::{self as pb};
use tonic::transport::Channel;

use crate::seed::with_bearer;

/// Seeded members in the demo campaign's audience, at most.
pub const AUDIENCE: usize = 60;

/// The demo campaign's name shown to staff (with the seed's prefix).
pub const DISPLAY_NAME: &str = "Spring reactivation";

/// Creates and schedules the demo campaign for the first [`AUDIENCE`] of
/// `members`, waits (at most `wait`) until membership's campaign job has
/// contacted them, then records purchases after the contact: two in five reached
/// members and one in five control members buy. Returns the campaign's name.
pub async fn seed_campaign(
    membership: Channel,
    bearer: &str,
    members: &[String],
    prefix: &str,
    wait: Duration,
) -> anyhow::Result<String> {
    let header: tonic::metadata::MetadataValue<_> = bearer.parse()?;
    let audience = &members[..members.len().min(AUDIENCE)];
    anyhow::ensure!(!audience.is_empty(), "the demo campaign needs seeded members");
    let tag = format!("demo/{prefix}");
    let mut people = MembershipServiceClient::new(membership.clone());
    for member in audience {
        people
            .set_tags(with_bearer(
                &header,
                pb::SetTagsRequest {
                    name: member.clone(),
                    set: vec![pb::Tag {
                        path: tag.clone(),
                        source: "seed".into(),
                        ..Default::default()
                    }],
                    remove_paths: vec![],
                },
            ))
            .await
            .context("tagging the demo campaign's audience failed")?;
        people
            .set_consent(with_bearer(
                &header,
                pb::SetConsentRequest {
                    name: member.clone(),
                    consent: Some(pb::Consent {
                        channel: pb::ConsentChannel::Email as i32,
                        granted: true,
                        source: "seed".into(),
                        update_time: None,
                    }),
                },
            ))
            .await
            .context("recording the audience's email consent failed")?;
    }
    let mut engagement = EngagementServiceClient::new(membership.clone());
    let segment = engagement
        .create_segment(with_bearer(
            &header,
            pb::CreateSegmentRequest {
                segment: Some(pb::Segment {
                    display_name: format!("Demo audience {prefix}"),
                    rule: Some(pb::SegmentRule {
                        rule: Some(Rule::Tag(pb::TagCondition {
                            path: tag.clone(),
                            value: String::new(),
                        })),
                    }),
                    ..Default::default()
                }),
                request_id: format!("seed-segment-{prefix}"),
            },
        ))
        .await
        .context("creating the demo segment failed")?
        .into_inner();
    let now = Utc::now();
    let campaign = engagement
        .create_campaign(with_bearer(
            &header,
            pb::CreateCampaignRequest {
                campaign: Some(pb::Campaign {
                    display_name: format!("{DISPLAY_NAME} {prefix}"),
                    segment: segment.name,
                    channel: pb::ConsentChannel::Email as i32,
                    trigger: pb::CampaignTrigger::Planned as i32,
                    send_time: Some(timestamp(now)),
                    action: pb::CampaignAction::Message as i32,
                    message_template: "Spring is here: new trail shoes in store this week.".into(),
                    control_share_bp: 2_500,
                    start_time: Some(timestamp(now - chrono::Duration::hours(1))),
                    end_time: Some(timestamp(now + chrono::Duration::days(14))),
                    cost_per_contact: Some(Money {
                        currency_code: "EUR".into(),
                        amount_minor: 15,
                    }),
                    ..Default::default()
                }),
                request_id: format!("seed-campaign-{prefix}"),
            },
        ))
        .await
        .context("creating the demo campaign failed")?
        .into_inner();
    engagement
        .schedule_campaign(with_bearer(
            &header,
            pb::ScheduleCampaignRequest {
                name: campaign.name.clone(),
            },
        ))
        .await
        .context("scheduling the demo campaign failed")?;

    // Membership's campaign job contacts the audience on its next run.
    println!(
        "waiting for membership's campaign job to run the demo campaign (at most {} s)",
        wait.as_secs()
    );
    let deadline = Instant::now() + wait;
    let reached = loop {
        let c = engagement
            .get_campaign(with_bearer(
                &header,
                pb::GetCampaignRequest {
                    name: campaign.name.clone(),
                },
            ))
            .await
            .context("reading the demo campaign failed")?
            .into_inner();
        if c.contacted_count + c.control_count > 0 {
            let sent = sent_to(&mut engagement, &header, &campaign.name).await?;
            if sent.len() as i64 >= c.contacted_count {
                break sent;
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "membership's campaign job did not run the demo campaign within {} s \
             (engagement.run_every_secs)",
            wait.as_secs()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let mut loyalty = LoyaltyServiceClient::new(membership);
    let control = audience.iter().filter(|m| !reached.contains(m));
    let buyers = reached
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 5 < 2)
        .chain(control.enumerate().filter(|(i, _)| i % 5 == 0));
    for (n, (i, member)) in buyers.enumerate() {
        let order = format!("demo-{prefix}-{n}");
        loyalty
            .record_purchase(with_bearer(
                &header,
                pb::RecordPurchaseRequest {
                    name: member.clone(),
                    purchase: Some(pb::Purchase {
                        order_id: order.clone(),
                        amount: Some(Money {
                            currency_code: "EUR".into(),
                            amount_minor: 4_990 + 1_000 * (i as i64 % 4),
                        }),
                        occur_time: Some(timestamp(Utc::now())),
                        channel: "online".into(),
                    }),
                    refund: false,
                    request_id: order,
                },
            ))
            .await
            .context("recording a demo purchase failed")?;
    }
    Ok(campaign.name)
}

/// The members the campaign's messages went to.
async fn sent_to(
    engagement: &mut EngagementServiceClient<Channel>,
    header: &tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    campaign: &str,
) -> anyhow::Result<Vec<String>> {
    let mut members = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = engagement
            .list_messages(with_bearer(
                header,
                pb::ListMessagesRequest {
                    parent: campaign.to_owned(),
                    page_size: 500,
                    page_token: page_token.clone(),
                },
            ))
            .await
            .context("listing the demo campaign's messages failed")?
            .into_inner();
        members.extend(page.messages.into_iter().map(|m| m.member));
        if page.next_page_token.is_empty() {
            return Ok(members);
        }
        page_token = page.next_page_token;
    }
}
