//! Identity resolution over gRPC: anonymous contacts recognised and taken over by
//! the member they turn out to be, new and returning members, member merges (points,
//! purchases, lifecycle, identifiers, the cache, idempotency, races, bad input), and
//! the check-in, content, lifecycle and overdue triggers contacting a member once.

use chrono::{Duration, Utc};
use prost::Message;
use retail_kit::convert::timestamp;
use retail_kit::events::EventHandler;
use retail_proto::common::Money;
use retail_proto::events as ev;
use retail_proto::membership::engagement_service_client::EngagementServiceClient;
use retail_proto::membership::loyalty_service_client::LoyaltyServiceClient;
use retail_proto::membership::segment_rule::Rule as R;
use retail_proto::membership::{self as pb};
use tonic::Code;

use crate::helpers::*;

fn points_token() -> String {
    token(&["membership.members.read", "membership.points.write"])
}

fn device(value: &str) -> pb::Identifier {
    pb::Identifier {
        kind: pb::IdentifierKind::Device as i32,
        value: value.into(),
        channel: String::new(),
    }
}

fn open_id(value: &str) -> pb::Identifier {
    pb::Identifier {
        kind: pb::IdentifierKind::External as i32,
        value: value.into(),
        channel: "wechat".into(),
    }
}

fn touch(scene: pb::Scene, kind: pb::TouchKind, product: &str) -> pb::Touchpoint {
    pb::Touchpoint {
        scene: scene as i32,
        place: "BER-1".into(),
        kind: kind as i32,
        product: product.into(),
        occur_time: None,
    }
}

async fn visit(
    app: &TestApp,
    id: pb::Identifier,
    linked: Vec<pb::Identifier>,
    touchpoint: pb::Touchpoint,
    request_id: &str,
) -> Result<pb::IdentifyVisitorResponse, tonic::Status> {
    app.client()
        .identify_visitor(authed(pb::IdentifyVisitorRequest {
            identifier: Some(id),
            touchpoint: Some(touchpoint),
            linked_identifiers: linked,
            request_id: request_id.into(),
        }))
        .await
        .map(|r| r.into_inner())
}

async fn check_in(app: &TestApp, id: pb::Identifier) -> pb::IdentifyVisitorResponse {
    visit(app, id, vec![], touch(pb::Scene::Store, pb::TouchKind::CheckIn, ""), "")
        .await
        .unwrap()
}

async fn merge(
    app: &TestApp,
    survivor: &str,
    merged: &str,
    request_id: &str,
) -> Result<pb::MergeMembersResponse, tonic::Status> {
    app.client()
        .merge_members(authed(pb::MergeMembersRequest {
            survivor: survivor.into(),
            merged: merged.into(),
            reason: "duplicate".into(),
            request_id: request_id.into(),
        }))
        .await
        .map(|r| r.into_inner())
}

async fn get(app: &TestApp, member: &str) -> Result<pb::Member, tonic::Status> {
    app.client()
        .get_member(authed(pb::GetMemberRequest {
            name: member.into(),
            read_mask: None,
        }))
        .await
        .map(|r| r.into_inner())
}

async fn pay(app: &TestApp, member: &str, order: &str, minor: i64, days_ago: i64) {
    LoyaltyServiceClient::new(app.channel.clone())
        .record_purchase(with_token(
            &points_token(),
            pb::RecordPurchaseRequest {
                name: member.into(),
                purchase: Some(pb::Purchase {
                    order_id: order.into(),
                    amount: Some(Money {
                        currency_code: "EUR".into(),
                        amount_minor: minor,
                    }),
                    occur_time: Some(timestamp(Utc::now() - Duration::days(days_ago))),
                    channel: "store".into(),
                }),
                refund: false,
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
}

async fn grant(app: &TestApp, member: &str, points: i64) {
    LoyaltyServiceClient::new(app.channel.clone())
        .grant_points(with_token(
            &points_token(),
            pb::GrantPointsRequest {
                name: member.into(),
                points,
                reason: "welcome".into(),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
}

async fn balance(app: &TestApp, member: &str) -> i64 {
    LoyaltyServiceClient::new(app.channel.clone())
        .get_points_balance(authed(pb::GetPointsBalanceRequest { name: member.into() }))
        .await
        .unwrap()
        .into_inner()
        .balance
}

async fn entries(app: &TestApp, member: &str) -> Vec<pb::PointsEntry> {
    LoyaltyServiceClient::new(app.channel.clone())
        .list_points_entries(authed(pb::ListPointsEntriesRequest {
            parent: member.into(),
            page_size: 500,
            page_token: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .points_entries
}

/// Reads `member` until the cache serves it, so the profile before a change sits in
/// the cache when the change comes.
async fn cached(app: &TestApp, member: &str) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let hits = app.cache.stats.hits.load(std::sync::atomic::Ordering::SeqCst);
        get(app, member).await.unwrap();
        if app.cache.stats.hits.load(std::sync::atomic::Ordering::SeqCst) > hits {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cache never served the member"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_merge_combines_points_purchases_lifecycle_and_identifiers_and_the_cache_serves_it_at_once() {
    let app = spawn_app().await;
    let ann = app.register("Ann", vec![phone("+4915200000001")]).await.unwrap();
    let dup = app
        .register("Ann B.", vec![phone("+4915200000002"), email("ann.b@example.com")])
        .await
        .unwrap();
    pay(&app, &ann.name, "m-1", 10_000, 10).await;
    pay(&app, &dup.name, "m-2", 25_000, 5).await;
    grant(&app, &dup.name, 40).await;
    let (ann_points, dup_points) = (balance(&app, &ann.name).await, balance(&app, &dup.name).await);
    assert_eq!((ann_points, dup_points), (100, 290));

    // Both profiles and an identifier of the duplicate are read through the cache first.
    cached(&app, &ann.name).await;
    cached(&app, &dup.name).await;
    assert_eq!(app.identify(email("ann.b@example.com")).await.unwrap().name, dup.name);
    assert_eq!(app.identify(email("ann.b@example.com")).await.unwrap().name, dup.name);

    let merged = merge(&app, &ann.name, &dup.name, "merge-ann-1").await.unwrap();
    let record = merged.merge.clone().unwrap();
    assert_eq!(
        (record.survivor.as_str(), record.merged.as_str()),
        (ann.name.as_str(), dup.name.as_str())
    );
    assert_eq!(record.points_transferred, 290);
    assert_eq!(record.purchases_moved, 1);
    assert_eq!(record.identifiers_moved, 2);

    // At once, through the cache: the survivor with everything, the duplicate's id
    // and identifiers answering as the survivor.
    let survivor = get(&app, &ann.name).await.unwrap();
    assert_eq!(survivor.points_balance, ann_points + dup_points);
    assert_eq!(survivor.lifecycle_state, pb::LifecycleState::NewRepeat as i32);
    assert_eq!(survivor.qualifying_spend.unwrap().amount_minor, 35_000);
    assert_eq!(survivor.identifiers.len(), 3);
    let via_dup = get(&app, &dup.name).await.unwrap();
    assert_eq!(via_dup.name, ann.name, "the merged id answers as the survivor");
    assert_eq!(via_dup.points_balance, 390);
    assert_eq!(masked(&app, &dup.name, &["name", "tier"]).await.unwrap().name, ann.name);
    assert_eq!(
        masked(&app, &dup.name, &["name", "points_balance"])
            .await
            .unwrap()
            .points_balance,
        390
    );
    for id in [
        phone("+4915200000001"),
        phone("+4915200000002"),
        email("ann.b@example.com"),
    ] {
        let found = app.identify(id).await.unwrap();
        assert_eq!(found.name, ann.name);
        assert_eq!(found.points_balance, 390);
    }

    // The ledgers: each balance is still the sum of its entries, the transfer
    // references the merge.
    assert_eq!(balance(&app, &ann.name).await, 390);
    let ann_entries = entries(&app, &ann.name).await;
    assert_eq!(ann_entries.iter().map(|e| e.points).sum::<i64>(), 390);
    let merge_ref = format!("merge:{}", record.name.trim_start_matches("memberMerges/"));
    assert!(
        ann_entries
            .iter()
            .any(|e| e.kind == "merge" && e.reference == merge_ref && e.points > 0)
    );

    // The same request again is the same merge; another one is refused.
    let again = merge(&app, &ann.name, &dup.name, "merge-ann-1").await.unwrap();
    assert_eq!(again.merge.unwrap().name, record.name);
    assert_eq!(balance(&app, &ann.name).await, 390);
    let err = merge(&app, &ann.name, &dup.name, "merge-ann-2").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    // Changes go to the survivor.
    let err = app
        .client()
        .update_member(authed(pb::UpdateMemberRequest {
            member: Some(pb::Member {
                name: dup.name.clone(),
                display_name: "X".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".into()],
            }),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    // A payment from the orders log for the duplicate's id (an order placed before
    // the merge) lands on the survivor.
    let handler = retail_membership::OrderEvents::new(app.state.clone().unwrap());
    let txn = retail_kit::db::begin_write(&app.db).await.unwrap();
    let event = order_paid(&dup.name, "m-3", 5_000);
    let then = handler.handle(&txn, &[&event]).await.unwrap();
    txn.commit().await.unwrap();
    for after in then {
        after.await;
    }
    assert_eq!(balance(&app, &ann.name).await, 440);
    assert_eq!(get(&app, &dup.name).await.unwrap().points_balance, 440);

    // Erasing the survivor erases the duplicate too: the same person.
    app.client()
        .erase_member(authed(pb::EraseMemberRequest {
            name: ann.name.clone(),
            reason: "asked to".into(),
        }))
        .await
        .unwrap();
    for name in [&ann.name, &dup.name] {
        assert_eq!(get(&app, name).await.unwrap_err().code(), Code::NotFound);
    }
    assert_eq!(
        app.identify(email("ann.b@example.com")).await.unwrap_err().code(),
        Code::NotFound
    );
}

/// An `OrderPaid` event of the orders log for `member`.
fn order_paid(member: &str, order: &str, minor: i64) -> ev::EventEnvelope {
    ev::EventEnvelope {
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
    }
}

/// Races `merges` (survivor, merged) at once; the number that won.
async fn race(app: &TestApp, merges: Vec<(String, String)>) -> usize {
    let tasks: Vec<_> = merges
        .into_iter()
        .enumerate()
        .map(|(i, (s, m))| {
            let mut client = app.client();
            let request = authed(pb::MergeMembersRequest {
                survivor: s,
                merged: m,
                reason: String::new(),
                request_id: format!("race-{i}-{}", uuid::Uuid::now_v7()),
            });
            tokio::spawn(async move { client.merge_members(request).await })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => won += 1,
            Err(e) => assert!(matches!(e.code(), Code::FailedPrecondition | Code::Aborted), "{e:?}"),
        }
    }
    won
}

#[tokio::test]
async fn concurrent_merges_of_one_member_let_exactly_one_win() {
    let app = spawn_app().await;
    let mut names = Vec::new();
    for i in 0..5 {
        let m = app
            .register("M", vec![phone(&format!("+491530000000{i}"))])
            .await
            .unwrap();
        grant(&app, &m.name, 100 * (i + 1)).await;
        names.push(m.name);
    }
    let n = |i: usize| names[i].clone();
    // Two survivors want the same duplicate; two members want each other.
    assert_eq!(race(&app, vec![(n(0), n(1)), (n(2), n(1))]).await, 1);
    assert_eq!(race(&app, vec![(n(3), n(4)), (n(4), n(3))]).await, 1);
    // No point was lost or made, and three people are left.
    let mut live = std::collections::BTreeMap::new();
    for name in &names {
        let m = get(&app, name).await.unwrap();
        live.insert(m.name.clone(), m.points_balance);
    }
    assert_eq!(live.len(), 3);
    assert_eq!(live.values().sum::<i64>(), 1_500);
    for name in live.keys() {
        assert_eq!(balance(&app, name).await, live[name]);
        assert_eq!(
            entries(&app, name).await.iter().map(|e| e.points).sum::<i64>(),
            live[name]
        );
    }
}

#[tokio::test]
async fn bad_merges_are_refused_with_the_field_or_the_missing_member() {
    let app = spawn_app().await;
    let a = app.register("A", vec![phone("+4915400000001")]).await.unwrap();
    let b = app.register("B", vec![phone("+4915400000002")]).await.unwrap();
    let err = merge(&app, &a.name, &a.name, "").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), vec!["merged".to_string()]);
    let err = merge(&app, "members/42", "nobody", "").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&err),
        vec!["survivor".to_string(), "merged".to_string()]
    );
    let unknown = format!("members/{}", uuid::Uuid::now_v7());
    let err = merge(&app, &a.name, &unknown, "").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    merge(&app, &a.name, &b.name, "").await.unwrap();
    let err = merge(&app, &b.name, &a.name, "").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "a merged member cannot survive");
    // An identifier of a kind this build does not know.
    let err = app
        .identify(pb::Identifier {
            kind: 99,
            value: "x".into(),
            channel: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), vec!["identifier.kind".to_string()]);
    let err = visit(
        &app,
        pb::Identifier {
            kind: 42,
            value: "x".into(),
            channel: String::new(),
        },
        vec![],
        pb::Touchpoint::default(),
        "",
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields = violated_fields(&err);
    for f in [
        "identifier.kind",
        "touchpoint.scene",
        "touchpoint.kind",
        "touchpoint.place",
    ] {
        assert!(fields.contains(&f.to_string()), "{f} in {fields:?}");
    }
    // A phone nobody holds opens no anonymous contact.
    let err = check_in_err(&app, phone("+4915400000099")).await;
    assert_eq!(err.code(), Code::NotFound);
}

async fn check_in_err(app: &TestApp, id: pb::Identifier) -> tonic::Status {
    visit(app, id, vec![], touch(pb::Scene::Store, pb::TouchKind::CheckIn, ""), "")
        .await
        .unwrap_err()
}

#[tokio::test]
async fn an_anonymous_contact_becomes_the_member_who_registers_with_its_id() {
    let app = spawn_app().await;
    let first = check_in(&app, device("dev-1")).await;
    assert_eq!(first.recognition, pb::Recognition::NewContact as i32);
    let contact = first.contact.unwrap();
    let again = visit(
        &app,
        device("dev-1"),
        vec![open_id("wx-1")],
        touch(pb::Scene::Online, pb::TouchKind::ViewProduct, "RUN-42"),
        "",
    )
    .await
    .unwrap();
    assert_eq!(again.recognition, pb::Recognition::ReturningContact as i32);
    let seen = again.contact.unwrap();
    assert_eq!(seen.name, contact.name);
    assert_eq!(seen.identifiers.len(), 2);
    assert_eq!(seen.touchpoints.len(), 2);
    assert!(app.identify(device("dev-1")).await.is_err(), "a contact is no member");

    // The person registers with the channel id: the contact is the member now.
    let member = app
        .register("Cleo", vec![phone("+4915500000001"), open_id("wx-1")])
        .await
        .unwrap();
    assert_eq!(
        member.identifiers.len(),
        3,
        "the device id came along: {:?}",
        member.identifiers
    );
    assert_eq!(app.identify(device("dev-1")).await.unwrap().name, member.name);
    let back = check_in(&app, device("dev-1")).await;
    assert_eq!(
        back.recognition,
        pb::Recognition::ReturningMember as i32,
        "its touches are the member's"
    );
    assert_eq!(back.member.unwrap().name, member.name);

    // New and returning: a member's first touch, then the next.
    let bob = app.register("Bob", vec![phone("+4915500000002")]).await.unwrap();
    let first = check_in(&app, phone("+4915500000002")).await;
    assert_eq!(first.recognition, pb::Recognition::NewMember as i32);
    assert_eq!(first.member.unwrap().name, bob.name);
    assert_eq!(
        check_in(&app, phone("+4915500000002")).await.recognition,
        pb::Recognition::ReturningMember as i32
    );

    // A member seen with another contact's beacon id takes that contact over.
    let beacon = pb::Identifier {
        kind: pb::IdentifierKind::Beacon as i32,
        value: "b-77".into(),
        channel: String::new(),
    };
    assert_eq!(
        check_in(&app, beacon.clone()).await.recognition,
        pb::Recognition::NewContact as i32
    );
    let linked = visit(
        &app,
        phone("+4915500000002"),
        vec![beacon.clone()],
        touch(pb::Scene::Store, pb::TouchKind::Visit, ""),
        "",
    )
    .await
    .unwrap();
    assert_eq!(linked.member.unwrap().identifiers.len(), 2);
    assert_eq!(app.identify(beacon).await.unwrap().name, bob.name);
}

async fn consent_email(app: &TestApp, member: &str) {
    app.client()
        .set_consent(authed(pb::SetConsentRequest {
            name: member.into(),
            consent: Some(pb::Consent {
                channel: pb::ConsentChannel::Email as i32,
                granted: true,
                source: "app".into(),
                update_time: None,
            }),
        }))
        .await
        .unwrap();
}

/// A running campaign with `trigger` over every member of DE-BE, by email.
async fn running_campaign(app: &TestApp, trigger: pb::CampaignTrigger) -> String {
    let mut engagement = EngagementServiceClient::new(app.channel.clone());
    let segment = engagement
        .create_segment(authed(pb::CreateSegmentRequest {
            segment: Some(pb::Segment {
                display_name: "everyone".into(),
                rule: Some(pb::SegmentRule {
                    rule: Some(R::Region(pb::RegionCondition {
                        regions: vec!["DE-BE".into()],
                    })),
                }),
                ..Default::default()
            }),
            request_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    let now = Utc::now();
    let campaign = engagement
        .create_campaign(authed(pb::CreateCampaignRequest {
            campaign: Some(pb::Campaign {
                display_name: "trigger".into(),
                segment: segment.name,
                channel: pb::ConsentChannel::Email as i32,
                trigger: trigger as i32,
                action: pb::CampaignAction::Message as i32,
                message_template: "Hello".into(),
                start_time: Some(timestamp(now - Duration::hours(1))),
                end_time: Some(timestamp(now + Duration::days(7))),
                ..Default::default()
            }),
            request_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    engagement
        .schedule_campaign(authed(pb::ScheduleCampaignRequest {
            name: campaign.name.clone(),
        }))
        .await
        .unwrap();
    app.state.clone().unwrap().run_campaigns(Utc::now()).await.unwrap();
    campaign.name
}

async fn sent(app: &TestApp, campaign: &str) -> Vec<pb::EngagementMessage> {
    app.state.clone().unwrap().deliver(100).await.unwrap();
    EngagementServiceClient::new(app.channel.clone())
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

#[tokio::test]
async fn a_check_in_and_a_product_tried_each_contact_the_member_once_however_often_they_come() {
    let app = spawn_app().await;
    let m = app.register("M", vec![phone("+4915600000001")]).await.unwrap();
    consent_email(&app, &m.name).await;
    let check_ins = running_campaign(&app, pb::CampaignTrigger::CheckIn).await;
    let content = running_campaign(&app, pb::CampaignTrigger::Content).await;
    // Online is no scene trigger.
    visit(
        &app,
        phone("+4915600000001"),
        vec![],
        touch(pb::Scene::Online, pb::TouchKind::CheckIn, ""),
        "",
    )
    .await
    .unwrap();
    assert!(sent(&app, &check_ins).await.is_empty());
    for request_id in ["door-1", "door-1", "door-2"] {
        visit(
            &app,
            phone("+4915600000001"),
            vec![],
            touch(pb::Scene::PartnerOutlet, pb::TouchKind::CheckIn, ""),
            request_id,
        )
        .await
        .unwrap();
    }
    let messages = sent(&app, &check_ins).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].member, m.name);
    for _ in 0..2 {
        visit(
            &app,
            phone("+4915600000001"),
            vec![],
            touch(pb::Scene::Store, pb::TouchKind::TryProduct, "RUN-42"),
            "",
        )
        .await
        .unwrap();
    }
    assert_eq!(sent(&app, &content).await.len(), 1);
}

fn overdue(member: &str) -> ev::EventEnvelope {
    let id = member.trim_start_matches("members/");
    ev::EventEnvelope {
        r#type: "retail.events.v1.MemberOverdue".into(),
        aggregate_id: id.into(),
        payload: Some(prost_types::Any {
            type_url: "type.googleapis.com/retail.events.v1.MemberOverdue".into(),
            value: ev::MemberOverdue {
                member_id: id.into(),
                cycle_days: 10.0,
                days_since_last: 20,
                ..Default::default()
            }
            .encode_to_vec(),
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn an_overdue_event_delivered_twice_contacts_the_member_once() {
    let app = spawn_app().await;
    let m = app.register("M", vec![phone("+4915700000001")]).await.unwrap();
    consent_email(&app, &m.name).await;
    let c = running_campaign(&app, pb::CampaignTrigger::Overdue).await;
    let handler = retail_membership::AnalyticsEvents::new(app.state.clone().unwrap());
    for _ in 0..2 {
        let txn = retail_kit::db::begin_write(&app.db).await.unwrap();
        let event = overdue(&m.name);
        let then = handler.handle(&txn, &[&event]).await.unwrap();
        txn.commit().await.unwrap();
        for after in then {
            after.await;
        }
    }
    assert_eq!(sent(&app, &c).await.len(), 1);
}

#[tokio::test]
async fn a_lifecycle_change_contacts_the_member_once_and_a_first_sight_not_at_all() {
    let app = spawn_app().await;
    let state = app.state.clone().unwrap();
    let m = app.register("M", vec![phone("+4915800000001")]).await.unwrap();
    consent_email(&app, &m.name).await;
    // The run that starts the campaign sees the member first: prospect, no trigger.
    let c = running_campaign(&app, pb::CampaignTrigger::LifecycleChange).await;
    assert!(sent(&app, &c).await.is_empty());
    pay(&app, &m.name, "l-1", 10_000, 0).await;
    for _ in 0..2 {
        state.run_campaigns(Utc::now()).await.unwrap();
    }
    assert_eq!(sent(&app, &c).await.len(), 1);
}
