//! Engagement over gRPC: segments counted and listed against the members, rule
//! validation, campaigns reaching only consented members once each, instant
//! triggers, and the campaign lifecycle.

use chrono::{Duration, Utc};
use prost::Message;
use retail_kit::convert::timestamp;
use retail_proto::common::Money;
use retail_proto::membership::engagement_service_client::EngagementServiceClient;
use retail_proto::membership::loyalty_service_client::LoyaltyServiceClient;
use retail_proto::membership::segment_rule::Rule as R;
use retail_proto::membership::{self as pb};
use tonic::Code;
use tonic::transport::Channel;

use crate::helpers::*;

fn engagement(app: &TestApp) -> EngagementServiceClient<Channel> {
    EngagementServiceClient::new(app.channel.clone())
}

async fn pay(app: &TestApp, member: &str, order: &str, minor: i64, channel: &str) -> pb::RecordPurchaseResponse {
    pay_at(app, member, order, minor, channel, Utc::now() - Duration::seconds(1)).await
}

async fn pay_at(
    app: &TestApp,
    member: &str,
    order: &str,
    minor: i64,
    channel: &str,
    at: chrono::DateTime<Utc>,
) -> pb::RecordPurchaseResponse {
    LoyaltyServiceClient::new(app.channel.clone())
        .record_purchase(with_token(
            &token(&["membership.members.read", "membership.points.write"]),
            pb::RecordPurchaseRequest {
                name: member.into(),
                purchase: Some(pb::Purchase {
                    order_id: order.into(),
                    amount: Some(Money {
                        currency_code: "EUR".into(),
                        amount_minor: minor,
                    }),
                    occur_time: Some(timestamp(at)),
                    channel: channel.into(),
                }),
                refund: false,
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
}

async fn consent(app: &TestApp, member: &str, channel: pb::ConsentChannel, granted: bool) {
    app.client()
        .set_consent(authed(pb::SetConsentRequest {
            name: member.into(),
            consent: Some(pb::Consent {
                channel: channel as i32,
                granted,
                source: "app".into(),
                update_time: None,
            }),
        }))
        .await
        .unwrap();
}

async fn tag(app: &TestApp, member: &str, path: &str) {
    app.client()
        .set_tags(authed(pb::SetTagsRequest {
            name: member.into(),
            set: vec![pb::Tag {
                path: path.into(),
                ..Default::default()
            }],
            remove_paths: vec![],
        }))
        .await
        .unwrap();
}

fn rule(r: R) -> pb::SegmentRule {
    pb::SegmentRule { rule: Some(r) }
}

fn all(rules: Vec<pb::SegmentRule>) -> pb::SegmentRule {
    rule(R::All(pb::RuleGroup { rules }))
}

async fn segment(app: &TestApp, r: pb::SegmentRule) -> Result<pb::Segment, tonic::Status> {
    engagement(app)
        .create_segment(authed(pb::CreateSegmentRequest {
            segment: Some(pb::Segment {
                display_name: "test".into(),
                rule: Some(r),
                ..Default::default()
            }),
            request_id: String::new(),
        }))
        .await
        .map(|r| r.into_inner())
}

async fn register(app: &TestApp, n: u32) -> String {
    app.register("M", vec![phone(&format!("+49151000{n:05}"))])
        .await
        .unwrap()
        .name
}

#[tokio::test]
async fn a_segment_counts_and_lists_the_members_its_rule_matches() {
    let app = spawn_app().await;
    let hiker = register(&app, 1).await;
    let hiking_buyer = register(&app, 2).await;
    let online_buyer = register(&app, 3).await;
    let _nobody = register(&app, 4).await;
    tag(&app, &hiker, "interest/outdoor/hiking").await;
    tag(&app, &hiking_buyer, "interest/outdoor").await;
    pay(&app, &hiking_buyer, "o-1", 10_000, "store").await;
    pay(&app, &online_buyer, "o-2", 10_000, "online").await;
    pay(&app, &online_buyer, "o-3", 10_000, "online").await;

    // Interested in the outdoors and never bought, or buying online (a computed tag).
    let never_bought = rule(R::Not(Box::new(rule(R::PurchaseCount(pb::PurchaseCountCondition {
        min: 1,
        ..Default::default()
    })))));
    let outdoor = rule(R::Tag(pb::TagCondition {
        path: "interest/outdoor".into(),
        value: String::new(),
    }));
    let online = rule(R::Tag(pb::TagCondition {
        path: "consumption/preferred_channel".into(),
        value: "online".into(),
    }));
    let s = segment(
        &app,
        rule(R::Any(pb::RuleGroup {
            rules: vec![all(vec![outdoor, never_bought]), online],
        })),
    )
    .await
    .unwrap();
    let got = engagement(&app)
        .get_segment(authed(pb::GetSegmentRequest { name: s.name.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, s, "the rule reads back as it was saved");
    let count = engagement(&app)
        .count_segment_members(authed(pb::CountSegmentMembersRequest { name: s.name.clone() }))
        .await
        .unwrap()
        .into_inner()
        .member_count;
    assert_eq!(count, 2);
    // Paged one at a time.
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page = engagement(&app)
            .list_segment_members(authed(pb::ListSegmentMembersRequest {
                name: s.name.clone(),
                page_size: 1,
                page_token: token.clone(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(page.members.len() <= 1);
        names.extend(page.members.into_iter().map(|m| m.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut want = vec![hiker.clone(), online_buyer.clone()];
    want.sort();
    names.sort();
    assert_eq!(names, want);

    // Tier and recency: the buyers bought today, nobody is gold.
    let s = segment(
        &app,
        all(vec![
            rule(R::Recency(pb::RecencyCondition {
                min_days: 0,
                max_days: Some(0),
            })),
            rule(R::Not(Box::new(rule(R::Tier(pb::TierCondition {
                tiers: vec!["gold".into()],
            }))))),
        ]),
    )
    .await
    .unwrap();
    let count = engagement(&app)
        .count_segment_members(authed(pb::CountSegmentMembersRequest { name: s.name }))
        .await
        .unwrap()
        .into_inner()
        .member_count;
    assert_eq!(count, 2);
}

#[tokio::test]
async fn an_expired_tag_is_neither_shown_nor_counted() {
    let app = spawn_app().await;
    let m = register(&app, 1).await;
    let member = app
        .client()
        .set_tags(authed(pb::SetTagsRequest {
            name: m.clone(),
            set: vec![
                pb::Tag {
                    path: "interest/outdoor".into(),
                    expire_time: Some(timestamp(Utc::now() - Duration::seconds(1))),
                    ..Default::default()
                },
                pb::Tag {
                    path: "social/influencer".into(),
                    expire_time: Some(timestamp(Utc::now() + Duration::days(30))),
                    ..Default::default()
                },
            ],
            remove_paths: vec![],
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(member.tags.len(), 1);
    assert_eq!(member.tags[0].path, "social/influencer");
    assert_eq!(member.tags[0].category, "social");
    assert!(member.tags[0].expire_time.is_some());
    let s = segment(
        &app,
        rule(R::Tag(pb::TagCondition {
            path: "interest".into(),
            value: String::new(),
        })),
    )
    .await
    .unwrap();
    let count = engagement(&app)
        .count_segment_members(authed(pb::CountSegmentMembersRequest { name: s.name }))
        .await
        .unwrap()
        .into_inner()
        .member_count;
    assert_eq!(count, 0);
}

#[tokio::test]
async fn a_bad_rule_is_refused_with_every_bad_field() {
    let app = spawn_app().await;
    let bad = all(vec![
        rule(R::Any(pb::RuleGroup { rules: vec![] })),
        pb::SegmentRule { rule: None },
        rule(R::Tier(pb::TierCondition {
            tiers: vec!["diamond".into()],
        })),
        rule(R::PurchaseCount(pb::PurchaseCountCondition {
            min: -1,
            max: None,
            within_days: None,
        })),
        rule(R::Lifecycle(pb::LifecycleCondition { states: vec![0] })),
        rule(R::Tag(pb::TagCondition {
            path: "Not A Path!".into(),
            value: String::new(),
        })),
    ]);
    let err = segment(&app, bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut fields = violated_fields(&err);
    fields.sort();
    assert_eq!(
        fields,
        vec![
            "segment.rule.all.rules[0].any.rules",
            "segment.rule.all.rules[1]",
            "segment.rule.all.rules[2].tier.tiers",
            "segment.rule.all.rules[3].purchase_count.min",
            "segment.rule.all.rules[4].lifecycle.states[0]",
            "segment.rule.all.rules[5].tag.path",
        ]
    );
    let err = segment(&app, pb::SegmentRule { rule: None }).await.unwrap_err();
    assert_eq!(violated_fields(&err), vec!["segment.rule"]);
}

struct CampaignSpec {
    segment: String,
    trigger: pb::CampaignTrigger,
    action: pb::CampaignAction,
    template: &'static str,
    bonus_points: i64,
    control_share_bp: i32,
}

async fn campaign(app: &TestApp, spec: CampaignSpec) -> Result<pb::Campaign, tonic::Status> {
    let now = Utc::now();
    let planned = spec.trigger == pb::CampaignTrigger::Planned;
    engagement(app)
        .create_campaign(authed(pb::CreateCampaignRequest {
            campaign: Some(pb::Campaign {
                display_name: "test campaign".into(),
                segment: spec.segment,
                channel: pb::ConsentChannel::Email as i32,
                trigger: spec.trigger as i32,
                send_time: planned.then(|| timestamp(now)),
                action: spec.action as i32,
                message_template: spec.template.into(),
                bonus_points: spec.bonus_points,
                control_share_bp: spec.control_share_bp,
                start_time: Some(timestamp(now - Duration::hours(1))),
                end_time: Some(timestamp(now + Duration::days(7))),
                ..Default::default()
            }),
            request_id: String::new(),
        }))
        .await
        .map(|r| r.into_inner())
}

async fn messages(app: &TestApp, campaign: &str) -> Vec<pb::EngagementMessage> {
    engagement(app)
        .list_messages(authed(pb::ListMessagesRequest {
            parent: campaign.into(),
            page_size: 500,
            page_token: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .messages
}

async fn everyone(app: &TestApp) -> String {
    segment(
        app,
        rule(R::Region(pb::RegionCondition {
            regions: vec!["DE-BE".into()],
        })),
    )
    .await
    .unwrap()
    .name
}

#[tokio::test]
async fn a_planned_campaign_reaches_each_consented_member_once_and_nobody_else() {
    let app = spawn_app().await;
    let state = app.state.clone().unwrap();
    let consented = register(&app, 1).await;
    let never_asked = register(&app, 2).await;
    let withdrew = register(&app, 3).await;
    let other_channel = register(&app, 4).await;
    consent(&app, &consented, pb::ConsentChannel::Email, true).await;
    consent(&app, &withdrew, pb::ConsentChannel::Email, true).await;
    consent(&app, &withdrew, pb::ConsentChannel::Email, false).await;
    consent(&app, &other_channel, pb::ConsentChannel::Sms, true).await;
    let c = campaign(
        &app,
        CampaignSpec {
            segment: everyone(&app).await,
            trigger: pb::CampaignTrigger::Planned,
            action: pb::CampaignAction::UpgradeNudge,
            template: "You are {tier}; {distance} more makes you {next_tier}.",
            bonus_points: 0,
            control_share_bp: 0,
        },
    )
    .await
    .unwrap();
    assert_eq!(c.state, pb::CampaignState::Draft as i32);
    // A draft does not run.
    assert_eq!(state.run_campaigns(Utc::now()).await.unwrap(), 0);
    let c = engagement(&app)
        .schedule_campaign(authed(pb::ScheduleCampaignRequest { name: c.name.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.state, pb::CampaignState::Scheduled as i32);
    assert_eq!(state.run_campaigns(Utc::now()).await.unwrap(), 1);
    // Running again (and the job on another replica) contacts nobody twice.
    assert_eq!(state.run_campaigns(Utc::now()).await.unwrap(), 0);
    let sent = messages(&app, &c.name).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].member, consented);
    assert_eq!(sent[0].body, "You are regular; 500.00 EUR more makes you silver.");
    assert!(sent[0].send_time.is_some());
    for m in [&never_asked, &withdrew, &other_channel] {
        assert!(sent.iter().all(|s| &s.member != m));
    }
    let c = engagement(&app)
        .get_campaign(authed(pb::GetCampaignRequest { name: c.name.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (c.state, c.contacted_count, c.control_count),
        (pb::CampaignState::Running as i32, 1, 0)
    );

    // Lifecycle: a running campaign cannot be scheduled again; cancelled is final.
    let err = engagement(&app)
        .schedule_campaign(authed(pb::ScheduleCampaignRequest { name: c.name.clone() }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    engagement(&app)
        .cancel_campaign(authed(pb::CancelCampaignRequest { name: c.name.clone() }))
        .await
        .unwrap();
    for result in [
        engagement(&app)
            .cancel_campaign(authed(pb::CancelCampaignRequest { name: c.name.clone() }))
            .await,
        engagement(&app)
            .schedule_campaign(authed(pb::ScheduleCampaignRequest { name: c.name.clone() }))
            .await,
    ] {
        assert_eq!(result.unwrap_err().code(), Code::FailedPrecondition);
    }
    // A finished window: a running campaign finishes at its end.
    let later = campaign(
        &app,
        CampaignSpec {
            segment: everyone(&app).await,
            trigger: pb::CampaignTrigger::Purchase,
            action: pb::CampaignAction::Message,
            template: "Thanks",
            bonus_points: 0,
            control_share_bp: 0,
        },
    )
    .await
    .unwrap();
    engagement(&app)
        .schedule_campaign(authed(pb::ScheduleCampaignRequest {
            name: later.name.clone(),
        }))
        .await
        .unwrap();
    state.run_campaigns(Utc::now()).await.unwrap();
    state.run_campaigns(Utc::now() + Duration::days(8)).await.unwrap();
    let later = engagement(&app)
        .get_campaign(authed(pb::GetCampaignRequest { name: later.name }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(later.state, pb::CampaignState::Finished as i32);
}

#[tokio::test]
async fn a_tier_upgrade_sends_the_upgrade_message_and_bonus_once() {
    let app = spawn_app().await;
    let state = app.state.clone().unwrap();
    let m = register(&app, 1).await;
    consent(&app, &m, pb::ConsentChannel::Email, true).await;
    let c = campaign(
        &app,
        CampaignSpec {
            segment: everyone(&app).await,
            trigger: pb::CampaignTrigger::TierUpgrade,
            action: pb::CampaignAction::BonusPoints,
            template: "Welcome to {tier}: {points} bonus points.",
            bonus_points: 50,
            control_share_bp: 0,
        },
    )
    .await
    .unwrap();
    engagement(&app)
        .schedule_campaign(authed(pb::ScheduleCampaignRequest { name: c.name.clone() }))
        .await
        .unwrap();
    state.run_campaigns(Utc::now()).await.unwrap();
    // No upgrade, no message.
    pay(&app, &m, "o-1", 10_000, "store").await;
    assert!(messages(&app, &c.name).await.is_empty());
    // 100 + 450 passes silver's 500.00: one message, one bonus.
    let paid = pay(&app, &m, "o-2", 45_000, "store").await;
    assert_eq!(paid.tier, "silver");
    // The same payment again (a redelivered event) and a second upgrade to gold.
    pay(&app, &m, "o-2", 45_000, "store").await;
    let gold = pay(&app, &m, "o-3", 300_000, "online").await;
    assert_eq!(gold.tier, "gold");
    state.run_campaigns(Utc::now()).await.unwrap();
    let sent = messages(&app, &c.name).await;
    assert_eq!(sent.len(), 1, "once per campaign and member");
    assert_eq!(sent[0].body, "Welcome to silver: 50 bonus points.");
    let balance = LoyaltyServiceClient::new(app.channel.clone())
        .get_points_balance(authed(pb::GetPointsBalanceRequest { name: m.clone() }))
        .await
        .unwrap()
        .into_inner();
    // 100 + 450 at x1.0, 3000 at x1.25 (silver), and the bonus once.
    assert_eq!(balance.balance, 100 + 450 + 3750 + 50);
}

#[tokio::test]
async fn the_control_group_gets_nothing_and_keeps_its_share() {
    let app = spawn_app().await;
    let state = app.state.clone().unwrap();
    let n = 60;
    for i in 0..n {
        let m = register(&app, 100 + i).await;
        consent(&app, &m, pb::ConsentChannel::Email, true).await;
    }
    let c = campaign(
        &app,
        CampaignSpec {
            segment: everyone(&app).await,
            trigger: pb::CampaignTrigger::Planned,
            action: pb::CampaignAction::Message,
            template: "Hello",
            bonus_points: 0,
            control_share_bp: 5_000,
        },
    )
    .await
    .unwrap();
    engagement(&app)
        .schedule_campaign(authed(pb::ScheduleCampaignRequest { name: c.name.clone() }))
        .await
        .unwrap();
    state.run_campaigns(Utc::now()).await.unwrap();
    let c = engagement(&app)
        .get_campaign(authed(pb::GetCampaignRequest { name: c.name.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.contacted_count + c.control_count, i64::from(n));
    // Half, within a wide tolerance for 60 draws (the domain test checks 20,000).
    assert!((15..=45).contains(&c.control_count), "control {}", c.control_count);
    assert_eq!(messages(&app, &c.name).await.len() as i64, c.contacted_count);
}

#[tokio::test]
async fn a_bad_campaign_is_refused_with_its_fields() {
    let app = spawn_app().await;
    let err = engagement(&app)
        .create_campaign(authed(pb::CreateCampaignRequest {
            campaign: Some(pb::Campaign {
                display_name: String::new(),
                segment: "segments/nope".into(),
                message_template: "Hi {name}".into(),
                control_share_bp: 9_000,
                ..Default::default()
            }),
            request_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut fields = violated_fields(&err);
    fields.sort();
    fields.dedup();
    assert_eq!(
        fields,
        vec![
            "campaign.action",
            "campaign.channel",
            "campaign.control_share_bp",
            "campaign.display_name",
            "campaign.end_time",
            "campaign.message_template",
            "campaign.segment",
            "campaign.start_time",
            "campaign.trigger",
        ]
    );
}

#[tokio::test]
async fn the_frequency_cap_holds_across_campaigns() {
    let app = spawn_app_with(|s| {
        s.engagement.frequency_cap = 1;
        s.engagement.frequency_window_days = 2;
    })
    .await;
    let state = app.state.clone().unwrap();
    let m = register(&app, 1).await;
    consent(&app, &m, pb::ConsentChannel::Email, true).await;
    let mut campaigns = Vec::new();
    for _ in 0..2 {
        let c = campaign(
            &app,
            CampaignSpec {
                segment: everyone(&app).await,
                trigger: pb::CampaignTrigger::Planned,
                action: pb::CampaignAction::Message,
                template: "Hello",
                bonus_points: 0,
                control_share_bp: 0,
            },
        )
        .await
        .unwrap();
        engagement(&app)
            .schedule_campaign(authed(pb::ScheduleCampaignRequest { name: c.name.clone() }))
            .await
            .unwrap();
        campaigns.push(c.name);
    }
    state.run_campaigns(Utc::now()).await.unwrap();
    let mut reached = 0;
    for c in &campaigns {
        reached += messages(&app, c).await.len();
    }
    assert_eq!(reached, 1, "one message per member and channel within the cap's window");
    // Past the cap's window (2 days) a new campaign reaches the member again.
    let c = campaign(
        &app,
        CampaignSpec {
            segment: everyone(&app).await,
            trigger: pb::CampaignTrigger::Planned,
            action: pb::CampaignAction::Message,
            template: "Hello again",
            bonus_points: 0,
            control_share_bp: 0,
        },
    )
    .await
    .unwrap();
    engagement(&app)
        .schedule_campaign(authed(pb::ScheduleCampaignRequest { name: c.name.clone() }))
        .await
        .unwrap();
    assert_eq!(state.run_campaigns(Utc::now() + Duration::days(3)).await.unwrap(), 1);
}

#[tokio::test]
async fn a_report_attributes_purchases_after_the_contact_and_compares_with_control() {
    let app = spawn_app().await;
    let state = app.state.clone().unwrap();
    let mut members = Vec::new();
    for i in 0..12 {
        let m = register(&app, 200 + i).await;
        consent(&app, &m, pb::ConsentChannel::Email, true).await;
        // Bought before the campaign: not a response.
        pay_at(
            &app,
            &m,
            &format!("before-{i}"),
            99_900,
            "store",
            Utc::now() - Duration::days(1),
        )
        .await;
        members.push(m);
    }
    let now = Utc::now() - Duration::seconds(1);
    let c = engagement(&app)
        .create_campaign(authed(pb::CreateCampaignRequest {
            campaign: Some(pb::Campaign {
                display_name: "report".into(),
                segment: everyone(&app).await,
                channel: pb::ConsentChannel::Email as i32,
                trigger: pb::CampaignTrigger::Planned as i32,
                send_time: Some(timestamp(now)),
                action: pb::CampaignAction::Message as i32,
                message_template: "Hello".into(),
                control_share_bp: 5_000,
                start_time: Some(timestamp(now - Duration::hours(1))),
                end_time: Some(timestamp(now + Duration::days(7))),
                cost_per_contact: Some(Money {
                    currency_code: "EUR".into(),
                    amount_minor: 50,
                }),
                ..Default::default()
            }),
            request_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    engagement(&app)
        .schedule_campaign(authed(pb::ScheduleCampaignRequest { name: c.name.clone() }))
        .await
        .unwrap();
    state.run_campaigns(now).await.unwrap();
    let reached: Vec<String> = messages(&app, &c.name).await.into_iter().map(|m| m.member).collect();
    let control: Vec<&String> = members.iter().filter(|m| !reached.contains(m)).collect();
    assert!(!reached.is_empty() && !control.is_empty(), "12 draws at 50 %");
    // Each reached member buys for 100.00 after the contact, one control member for 30.00.
    for (i, m) in reached.iter().enumerate() {
        pay_at(&app, m, &format!("after-{i}"), 10_000, "online", Utc::now()).await;
    }
    pay_at(&app, control[0], "after-control", 3_000, "online", Utc::now()).await;
    let r = engagement(&app)
        .get_campaign_report(authed(pb::GetCampaignReportRequest { name: c.name.clone() }))
        .await
        .unwrap()
        .into_inner();
    let n = reached.len() as i64;
    let k = control.len() as i64;
    assert_eq!((r.reached, r.responded, r.response_rate_bp), (n, n, 10_000));
    assert_eq!((r.control, r.control_responded), (k, 1));
    assert_eq!(r.control_response_rate_bp, 10_000 / k);
    assert_eq!(r.revenue.unwrap().amount_minor, n * 10_000);
    assert_eq!(r.control_revenue.unwrap().amount_minor, 3_000);
    let incremental = n * 10_000 - 3_000 * n / k;
    assert_eq!(r.incremental_revenue.unwrap().amount_minor, incremental);
    assert_eq!(r.cost.unwrap().amount_minor, n * 50);
    assert_eq!(r.roi_bp, Some((incremental - n * 50) * 10_000 / (n * 50)));
}

/// An `OrderPaid` of the orders log applied as the consumer does, in one write
/// transaction, then what the handler runs after the commit.
async fn apply_order_paid(app: &TestApp, member: &str, order: &str, minor: i64) {
    use prost::Message;
    use retail_kit::events::EventHandler;
    use retail_proto::events as ev;
    let event = ev::EventEnvelope {
        r#type: "retail.events.v1.OrderPaid".into(),
        aggregate_id: order.into(),
        payload: Some(prost_types::Any {
            type_url: "type.googleapis.com/retail.events.v1.OrderPaid".into(),
            value: ev::OrderPaid {
                order_id: order.into(),
                parties: Some(ev::OrderParties {
                    member_id: member.trim_start_matches("members/").into(),
                    channel: "online".into(),
                    ..Default::default()
                }),
                amount: Some(Money {
                    currency_code: "EUR".into(),
                    amount_minor: minor,
                }),
                pay_time: Some(timestamp(Utc::now())),
                ..Default::default()
            }
            .encode_to_vec(),
        }),
        ..Default::default()
    };
    let handler = retail_membership::OrderEvents::new(app.state.clone().unwrap());
    let txn = retail_kit::db::begin_write(&app.db).await.unwrap();
    let then = handler.handle(&txn, &[&event]).await.unwrap();
    txn.commit().await.unwrap();
    for after in then {
        after.await;
    }
}

#[tokio::test]
async fn a_tier_upgrade_from_the_orders_log_delivered_twice_sends_one_message() {
    let app = spawn_app().await;
    let state = app.state.clone().unwrap();
    let m = register(&app, 1).await;
    let silent = register(&app, 2).await;
    consent(&app, &m, pb::ConsentChannel::Email, true).await;
    let c = campaign(
        &app,
        CampaignSpec {
            segment: everyone(&app).await,
            trigger: pb::CampaignTrigger::TierUpgrade,
            action: pb::CampaignAction::UpgradeNudge,
            template: "Now {tier}; {distance} to {next_tier}.",
            bonus_points: 0,
            control_share_bp: 0,
        },
    )
    .await
    .unwrap();
    engagement(&app)
        .schedule_campaign(authed(pb::ScheduleCampaignRequest { name: c.name.clone() }))
        .await
        .unwrap();
    state.run_campaigns(Utc::now()).await.unwrap();
    apply_order_paid(&app, &m, "log-1", 60_000).await;
    apply_order_paid(&app, &m, "log-1", 60_000).await;
    // Upgraded too, but without consent: not contacted.
    apply_order_paid(&app, &silent, "log-2", 60_000).await;
    state.run_campaigns(Utc::now()).await.unwrap();
    let sent = messages(&app, &c.name).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].member, m);
    assert_eq!(sent[0].body, "Now silver; 2400.00 EUR to gold.");
}

#[tokio::test]
async fn concurrent_runs_contact_each_member_once_within_the_budget() {
    let app = spawn_app().await;
    let state = app.state.clone().unwrap();
    for i in 0..20 {
        let m = register(&app, 300 + i).await;
        consent(&app, &m, pb::ConsentChannel::Email, true).await;
    }
    let now = Utc::now();
    let c = engagement(&app)
        .create_campaign(authed(pb::CreateCampaignRequest {
            campaign: Some(pb::Campaign {
                display_name: "budget".into(),
                segment: everyone(&app).await,
                channel: pb::ConsentChannel::Email as i32,
                trigger: pb::CampaignTrigger::Planned as i32,
                send_time: Some(timestamp(now)),
                action: pb::CampaignAction::Message as i32,
                message_template: "Hello".into(),
                start_time: Some(timestamp(now - Duration::hours(1))),
                end_time: Some(timestamp(now + Duration::days(1))),
                budget_contacts: 15,
                ..Default::default()
            }),
            request_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    engagement(&app)
        .schedule_campaign(authed(pb::ScheduleCampaignRequest { name: c.name.clone() }))
        .await
        .unwrap();
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let state = state.clone();
            tokio::spawn(async move { state.run_campaigns(now).await })
        })
        .collect();
    let mut contacted = 0;
    for run in runs {
        contacted += run.await.unwrap().unwrap();
    }
    assert_eq!(contacted, 15, "the budget, each member once");
    let sent = messages(&app, &c.name).await;
    let mut members: Vec<&String> = sent.iter().map(|m| &m.member).collect();
    members.sort();
    members.dedup();
    assert_eq!((sent.len(), members.len()), (15, 15));
}

#[tokio::test]
async fn a_coupon_campaign_names_its_coupon_and_needs_catalog() {
    let app = spawn_app().await;
    let now = Utc::now();
    let mut spec = pb::Campaign {
        display_name: "coupon".into(),
        segment: everyone(&app).await,
        channel: pb::ConsentChannel::Email as i32,
        trigger: pb::CampaignTrigger::Planned as i32,
        send_time: Some(timestamp(now)),
        action: pb::CampaignAction::Coupon as i32,
        message_template: "Your code: {coupon_code}".into(),
        start_time: Some(timestamp(now - Duration::hours(1))),
        end_time: Some(timestamp(now + Duration::days(7))),
        ..Default::default()
    };
    let create = |campaign: pb::Campaign| {
        let mut client = engagement(&app);
        async move {
            client
                .create_campaign(authed(pb::CreateCampaignRequest {
                    campaign: Some(campaign),
                    request_id: String::new(),
                }))
                .await
        }
    };
    let err = create(spec.clone()).await.unwrap_err();
    assert_eq!(violated_fields(&err), vec!["campaign.coupon"]);
    spec.coupon = "coupons/not-a-uuid".into();
    let err = create(spec.clone()).await.unwrap_err();
    assert_eq!(violated_fields(&err), vec!["campaign.coupon"]);
    // Another action hands out no coupon; a coupon campaign's message shows the code.
    let mut other = spec.clone();
    other.action = pb::CampaignAction::Message as i32;
    other.coupon = format!("coupons/{}", uuid::Uuid::new_v4());
    let err = create(other).await.unwrap_err();
    assert_eq!(violated_fields(&err), vec!["campaign.coupon"]);
    spec.coupon = format!("coupons/{}", uuid::Uuid::new_v4());
    let mut silent = spec.clone();
    silent.message_template = "Hello".into();
    let err = create(silent).await.unwrap_err();
    assert_eq!(violated_fields(&err), vec!["campaign.message_template"]);
    // This membership has no catalog URL.
    let err = create(spec).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
}

/// The membership log from its start through the first event `last` accepts.
async fn log_through(
    app: &TestApp,
    last: impl Fn(&retail_proto::events::EventEnvelope) -> bool,
) -> Vec<retail_proto::events::EventEnvelope> {
    let mut log = retail_proto::events::event_log_service_client::EventLogServiceClient::new(app.channel.clone());
    let mut stream = log
        .subscribe(authed(retail_proto::events::SubscribeRequest {
            after_position: 0,
            max_batch_size: 100,
        }))
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    loop {
        let batch = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
            .await
            .expect("the log reaches the marker")
            .unwrap()
            .unwrap();
        for event in batch.events {
            let done = last(&event);
            out.push(event);
            if done {
                return out;
            }
        }
    }
}

/// The events of `log` of message type `M`, decoded.
fn of_type<M: prost::Message + prost::Name + Default>(log: &[retail_proto::events::EventEnvelope]) -> Vec<M> {
    log.iter()
        .filter(|e| e.r#type == M::full_name())
        .map(|e| M::decode(e.payload.as_ref().unwrap().value.as_slice()).unwrap())
        .collect()
}

#[tokio::test]
async fn every_audience_decision_is_published_once_with_the_members_lifecycle_state_and_window() {
    let app = spawn_app().await;
    let state = app.state.clone().unwrap();
    let now = Utc::now();
    // Lifecycle window 3 months: a purchase 240 days ago leaves a member sleeping,
    // one 420 days ago lost; a member who never bought is a prospect.
    let mut expected = std::collections::BTreeMap::new();
    for i in 0..12u32 {
        let m = register(&app, 300 + i).await;
        consent(&app, &m, pb::ConsentChannel::Email, true).await;
        let (days, lifecycle) = match i % 3 {
            0 => (Some(240), "sleeping"),
            1 => (Some(420), "lost"),
            _ => (None, "prospect"),
        };
        if let Some(days) = days {
            pay_at(
                &app,
                &m,
                &format!("old-{i}"),
                1_000,
                "store",
                now - Duration::days(days),
            )
            .await;
        }
        expected.insert(m.trim_start_matches("members/").to_owned(), lifecycle);
    }
    // Not consented: not in the audience, not decided.
    let _silent = register(&app, 399).await;
    let c = campaign(
        &app,
        CampaignSpec {
            segment: everyone(&app).await,
            trigger: pb::CampaignTrigger::Planned,
            action: pb::CampaignAction::Message,
            template: "We miss you",
            bonus_points: 0,
            control_share_bp: 5_000,
        },
    )
    .await
    .unwrap();
    engagement(&app)
        .schedule_campaign(authed(pb::ScheduleCampaignRequest { name: c.name.clone() }))
        .await
        .unwrap();
    let at = Utc::now();
    state.run_campaigns(at).await.unwrap();
    // A retried job decides nothing again and publishes nothing again.
    assert_eq!(state.run_campaigns(at).await.unwrap(), 0);
    let c = engagement(&app)
        .get_campaign(authed(pb::GetCampaignRequest { name: c.name.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.contacted_count + c.control_count, 12);
    assert!(c.control_count > 0 && c.contacted_count > 0, "12 draws at 50 %");
    let id = c.name.trim_start_matches("campaigns/").to_owned();

    // One more event afterwards marks the end of what the runs published.
    let marker = register(&app, 398).await;
    consent(&app, &marker, pb::ConsentChannel::Sms, true).await;
    let log = log_through(&app, |e| {
        e.r#type == "retail.events.v1.ConsentChanged"
            && retail_proto::events::ConsentChanged::decode(e.payload.as_ref().unwrap().value.as_slice())
                .is_ok_and(|c| c.channel == "sms")
    })
    .await;
    let mut decided: Vec<retail_proto::events::CampaignMemberDecided> = of_type(&log);
    assert_eq!(decided.len(), 12, "one event per decision");
    decided.sort_by(|a, b| a.member_id.cmp(&b.member_id));
    let members: Vec<&str> = decided.iter().map(|d| d.member_id.as_str()).collect();
    let want: Vec<&str> = expected.keys().map(String::as_str).collect();
    assert_eq!(members, want, "each consented member decided once");
    let mut control = 0;
    for d in &decided {
        assert_eq!(d.campaign_id, id);
        assert_eq!(d.channel, "email");
        assert_eq!(d.lifecycle_state, expected[&d.member_id], "{}", d.member_id);
        assert_eq!(d.outcome, if d.control { "control" } else { "contacted" });
        control += i64::from(d.control);
        let decide = d.decide_time.unwrap();
        assert_eq!(decide, timestamp(at));
        // The default attribution window: 14 days.
        assert_eq!(d.attribution_end_time.unwrap(), timestamp(at + Duration::days(14)));
    }
    assert_eq!(control, c.control_count);

    // The campaign's states, in order: created, scheduled, started.
    let changes: Vec<retail_proto::events::CampaignChanged> = of_type(&log);
    let states: Vec<&str> = changes.iter().map(|c| c.state.as_str()).collect();
    assert_eq!(states, vec!["draft", "scheduled", "running"]);
    assert!(
        changes
            .iter()
            .all(|e| e.campaign_id == id && e.display_name == "test campaign")
    );
}

async fn list_campaigns(
    app: &TestApp,
    state: pb::CampaignState,
    page_size: i32,
    page_token: &str,
) -> Result<pb::ListCampaignsResponse, tonic::Status> {
    engagement(app)
        .list_campaigns(authed(pb::ListCampaignsRequest {
            page_size,
            page_token: page_token.into(),
            state: state as i32,
        }))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn campaigns_are_listed_newest_first_in_pages_and_by_state_with_their_counts() {
    let app = spawn_app().await;
    let state = app.state.clone().unwrap();
    for i in 0..4 {
        let m = register(&app, 300 + i).await;
        consent(&app, &m, pb::ConsentChannel::Email, true).await;
    }
    let audience = everyone(&app).await;
    let spec = || CampaignSpec {
        segment: audience.clone(),
        trigger: pb::CampaignTrigger::Planned,
        action: pb::CampaignAction::Message,
        template: "Hello",
        bonus_points: 0,
        control_share_bp: 0,
    };
    let first = campaign(&app, spec()).await.unwrap().name;
    let second = campaign(&app, spec()).await.unwrap().name;
    let third = campaign(&app, spec()).await.unwrap().name;
    engagement(&app)
        .schedule_campaign(authed(pb::ScheduleCampaignRequest { name: second.clone() }))
        .await
        .unwrap();
    engagement(&app)
        .cancel_campaign(authed(pb::CancelCampaignRequest { name: third.clone() }))
        .await
        .unwrap();
    // The scheduled one runs: it contacts the four consented members.
    assert_eq!(state.run_campaigns(Utc::now()).await.unwrap(), 4);

    let names = |r: &pb::ListCampaignsResponse| r.campaigns.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    let page = list_campaigns(&app, pb::CampaignState::Unspecified, 2, "")
        .await
        .unwrap();
    assert_eq!(names(&page), vec![third.clone(), second.clone()]);
    assert!(!page.next_page_token.is_empty());
    let running = &page.campaigns[1];
    assert_eq!(running.state, pb::CampaignState::Running as i32);
    assert_eq!((running.contacted_count, running.control_count), (4, 0));
    assert_eq!(page.campaigns[0].state, pb::CampaignState::Cancelled as i32);
    assert_eq!(page.campaigns[0].contacted_count, 0);
    let rest = list_campaigns(&app, pb::CampaignState::Unspecified, 2, &page.next_page_token)
        .await
        .unwrap();
    assert_eq!(names(&rest), vec![first.clone()]);
    assert!(rest.next_page_token.is_empty());
    // The list shows what GetCampaign shows.
    let got = engagement(&app)
        .get_campaign(authed(pb::GetCampaignRequest { name: second.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(running, &got);

    for (s, expected) in [
        (pb::CampaignState::Draft, vec![first.clone()]),
        (pb::CampaignState::Running, vec![second.clone()]),
        (pb::CampaignState::Cancelled, vec![third.clone()]),
        (pb::CampaignState::Finished, vec![]),
    ] {
        let listed = list_campaigns(&app, s, 0, "").await.unwrap();
        assert_eq!(names(&listed), expected, "{s:?}");
    }
    // A token belongs to its filter; a state must be one.
    let err = list_campaigns(&app, pb::CampaignState::Draft, 2, &page.next_page_token)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), vec!["page_token"]);
    let err = engagement(&app)
        .list_campaigns(authed(pb::ListCampaignsRequest {
            state: 99,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), vec!["state"]);
    let err = list_campaigns(&app, pb::CampaignState::Unspecified, -1, "")
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), vec!["page_size"]);
}

/// A token as identity issues it to an analyst: the role and every `.read` scope
/// outside identity.
fn analyst<T>(message: T) -> tonic::Request<T> {
    use retail_kit::auth::PrincipalKind;
    use retail_testkit::tokens::{claims, sign};
    let mut c = claims(
        "analyst-1",
        PrincipalKind::Staff,
        &[
            "membership.members.read",
            "membership.engagement.read",
            "catalog.read",
            "orders.read",
            "partner.read",
            "analytics.read",
            "events.read",
        ],
        None,
    );
    c.roles = vec!["analyst".into()];
    with_token(&sign(&c), message)
}

#[tokio::test]
async fn an_analyst_reads_campaigns_and_reports_but_changes_nothing() {
    let app = spawn_app().await;
    let audience = everyone(&app).await;
    let c = campaign(
        &app,
        CampaignSpec {
            segment: audience.clone(),
            trigger: pb::CampaignTrigger::Planned,
            action: pb::CampaignAction::Message,
            template: "Hello",
            bonus_points: 0,
            control_share_bp: 1_000,
        },
    )
    .await
    .unwrap();
    let mut client = engagement(&app);
    let listed = client
        .list_campaigns(analyst(pb::ListCampaignsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.campaigns.len(), 1);
    assert_eq!(listed.campaigns[0].name, c.name);
    assert_eq!(listed.campaigns[0].control_share_bp, 1_000);
    client
        .get_campaign(analyst(pb::GetCampaignRequest { name: c.name.clone() }))
        .await
        .unwrap();
    let report = client
        .get_campaign_report(analyst(pb::GetCampaignReportRequest { name: c.name.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((report.reached, report.control), (0, 0));

    let denied = [
        client
            .create_segment(analyst(pb::CreateSegmentRequest {
                segment: Some(pb::Segment {
                    display_name: "x".into(),
                    rule: Some(rule(R::Region(pb::RegionCondition {
                        regions: vec!["DE-BE".into()],
                    }))),
                    ..Default::default()
                }),
                request_id: String::new(),
            }))
            .await
            .map(|_| ()),
        client
            .create_campaign(analyst(pb::CreateCampaignRequest {
                campaign: Some(c.clone()),
                request_id: String::new(),
            }))
            .await
            .map(|_| ()),
        client
            .schedule_campaign(analyst(pb::ScheduleCampaignRequest { name: c.name.clone() }))
            .await
            .map(|_| ()),
        client
            .cancel_campaign(analyst(pb::CancelCampaignRequest { name: c.name.clone() }))
            .await
            .map(|_| ()),
    ];
    for (i, result) in denied.into_iter().enumerate() {
        assert_eq!(result.unwrap_err().code(), Code::PermissionDenied, "change {i}");
    }
    // Nothing changed: still one draft.
    let after = client
        .list_campaigns(analyst(pb::ListCampaignsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.campaigns.len(), 1);
    assert_eq!(after.campaigns[0].state, pb::CampaignState::Draft as i32);
}

/// Support staff and store managers may read and change members, not segments
/// and campaigns; a service account holding `membership.members.read` neither.
#[tokio::test]
async fn members_scopes_alone_neither_read_nor_change_engagement() {
    let app = spawn_app().await;
    let audience = everyone(&app).await;
    let c = campaign(
        &app,
        CampaignSpec {
            segment: audience.clone(),
            trigger: pb::CampaignTrigger::Planned,
            action: pb::CampaignAction::Message,
            template: "Hello",
            bonus_points: 0,
            control_share_bp: 0,
        },
    )
    .await
    .unwrap();
    let support = token(&[
        "membership.members.read",
        "membership.members.write",
        "catalog.read",
        "orders.read",
        "orders.write",
    ]);
    let mut client = engagement(&app);
    let refused = [
        client
            .list_campaigns(with_token(&support, pb::ListCampaignsRequest::default()))
            .await
            .map(|_| ()),
        client
            .get_campaign(with_token(&support, pb::GetCampaignRequest { name: c.name.clone() }))
            .await
            .map(|_| ()),
        client
            .get_campaign_report(with_token(
                &support,
                pb::GetCampaignReportRequest { name: c.name.clone() },
            ))
            .await
            .map(|_| ()),
        client
            .get_segment(with_token(&support, pb::GetSegmentRequest { name: audience.clone() }))
            .await
            .map(|_| ()),
        client
            .schedule_campaign(with_token(
                &support,
                pb::ScheduleCampaignRequest { name: c.name.clone() },
            ))
            .await
            .map(|_| ()),
        client
            .create_campaign(with_token(
                &support,
                pb::CreateCampaignRequest {
                    campaign: Some(c.clone()),
                    request_id: String::new(),
                },
            ))
            .await
            .map(|_| ()),
    ];
    for (i, result) in refused.into_iter().enumerate() {
        assert_eq!(result.unwrap_err().code(), Code::PermissionDenied, "call {i}");
    }
    // The segment's members need both scopes: engagement alone is not enough.
    let engagement_only = token(&["membership.engagement.read"]);
    let err = client
        .list_segment_members(with_token(
            &engagement_only,
            pb::ListSegmentMembersRequest {
                name: audience.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let listed = client
        .list_campaigns(authed(pb::ListCampaignsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed.campaigns[0].state,
        pb::CampaignState::Draft as i32,
        "nothing changed"
    );
}
