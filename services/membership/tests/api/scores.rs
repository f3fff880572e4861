//! Analytics' member scores (`MemberScored`) followed over a subscription: each
//! applied once though delivered twice, the RFM segment and the predicted tags
//! recorded, segments over them, expiry, merged members, rule validation.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures::Stream;
use prost::{Message, Name};
use retail_kit::convert::timestamp;
use retail_proto::events::event_log_service_server::{EventLogService, EventLogServiceServer};
use retail_proto::events::{self as ev, EventEnvelope, SubscribeRequest, SubscribeResponse};
use retail_proto::membership::engagement_service_client::EngagementServiceClient;
use retail_proto::membership::segment_rule::Rule as R;
use retail_proto::membership::{self as pb};
use sea_orm::{ConnectionTrait, Statement};
use tonic::Code;

use crate::helpers::*;

/// Analytics' log, served live: events pushed later reach the open subscription,
/// and every batch is sent twice, as a redelivery would.
#[derive(Clone, Default)]
struct FakeAnalyticsLog(Arc<Mutex<Vec<EventEnvelope>>>);

impl FakeAnalyticsLog {
    fn scored(&self, member: &str, segment: &str, tags: &[(&str, chrono::DateTime<Utc>)]) -> u64 {
        let id = member.trim_start_matches("members/");
        let event = ev::MemberScored {
            member_id: id.into(),
            recency_score: 1,
            frequency_score: 4,
            monetary_score: 4,
            rfm_segment: segment.into(),
            predicted_tags: tags
                .iter()
                .map(|(name, expires)| ev::PredictedTag {
                    name: (*name).into(),
                    expire_time: Some(timestamp(*expires)),
                })
                .collect(),
            score_time: Some(timestamp(Utc::now())),
        };
        let mut log = self.0.lock().unwrap();
        let position = log.len() as u64 + 1;
        log.push(EventEnvelope {
            id: format!("analytics-{position}"),
            r#type: ev::MemberScored::full_name(),
            source: "analytics".into(),
            aggregate_id: id.into(),
            occur_time: Some(timestamp(Utc::now())),
            position,
            payload: Some(prost_types::Any {
                type_url: ev::MemberScored::type_url(),
                value: event.encode_to_vec(),
            }),
            partition_key: id.into(),
        });
        position
    }

    async fn serve(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = futures::stream::unfold(listener, |listener| async move {
            let accepted = listener.accept().await.map(|(stream, _)| stream);
            Some((accepted, listener))
        });
        let service = EventLogServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming),
        );
        addr
    }
}

type Batches = Pin<Box<dyn Stream<Item = Result<SubscribeResponse, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl EventLogService for FakeAnalyticsLog {
    type SubscribeStream = Batches;

    async fn subscribe(
        &self,
        request: tonic::Request<SubscribeRequest>,
    ) -> Result<tonic::Response<Batches>, tonic::Status> {
        let after = request.into_inner().after_position;
        let log = self.0.clone();
        let batches = futures::stream::unfold((log, after, None), |(log, sent, again)| async move {
            if let Some(events) = again {
                return Some((Ok(SubscribeResponse { events }), (log, sent, None)));
            }
            loop {
                let events: Vec<EventEnvelope> = log
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|e| e.position > sent)
                    .cloned()
                    .collect();
                if let Some(last) = events.last().map(|e| e.position) {
                    return Some((
                        Ok(SubscribeResponse { events: events.clone() }),
                        (log, last, Some(events)),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Ok(tonic::Response::new(Box::pin(batches)))
    }
}

/// Membership following `log` as analytics' log.
async fn following(log: &FakeAnalyticsLog) -> TestApp {
    let addr = log.serve().await;
    spawn_app_with(|s| s.analytics.events_url = Some(format!("http://{addr}"))).await
}

/// Waits until membership has applied analytics' log up to `position`.
async fn applied(app: &TestApp, position: u64) {
    let backend = app.db.get_database_backend();
    let sql = "SELECT MAX(log_position) FROM consumer_positions WHERE source = 'analytics'";
    for _ in 0..400 {
        let row = app
            .db
            .query_one_raw(Statement::from_string(backend, sql))
            .await
            .unwrap();
        let at: Option<i64> = row.and_then(|r| r.try_get_by_index(0).ok()).flatten();
        if at.unwrap_or(0) >= position as i64 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("analytics' log never applied up to {position}");
}

fn engagement(app: &TestApp) -> EngagementServiceClient<tonic::transport::Channel> {
    EngagementServiceClient::new(app.channel.clone())
}

fn rule(r: R) -> pb::SegmentRule {
    pb::SegmentRule { rule: Some(r) }
}

fn rfm(segments: &[&str]) -> pb::SegmentRule {
    rule(R::RfmSegment(pb::RfmSegmentCondition {
        segments: segments.iter().map(|s| (*s).to_owned()).collect(),
    }))
}

fn tag(path: &str) -> pb::SegmentRule {
    rule(R::Tag(pb::TagCondition {
        path: path.into(),
        value: String::new(),
    }))
}

async fn segment(app: &TestApp, r: pb::SegmentRule) -> Result<pb::Segment, tonic::Status> {
    engagement(app)
        .create_segment(authed(pb::CreateSegmentRequest {
            segment: Some(pb::Segment {
                display_name: "scored".into(),
                rule: Some(r),
                ..Default::default()
            }),
            request_id: String::new(),
        }))
        .await
        .map(|r| r.into_inner())
}

/// The segment's count and its members' names (sorted), paged two at a time.
async fn members_of(app: &TestApp, segment: &str) -> (i64, Vec<String>) {
    let count = engagement(app)
        .count_segment_members(authed(pb::CountSegmentMembersRequest { name: segment.into() }))
        .await
        .unwrap()
        .into_inner()
        .member_count;
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page = engagement(app)
            .list_segment_members(authed(pb::ListSegmentMembersRequest {
                name: segment.into(),
                page_size: 2,
                page_token: token.clone(),
            }))
            .await
            .unwrap()
            .into_inner();
        names.extend(page.members.into_iter().map(|m| m.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    names.sort();
    (count, names)
}

async fn get(app: &TestApp, member: &str) -> pb::Member {
    app.client()
        .get_member(authed(pb::GetMemberRequest {
            name: member.into(),
            read_mask: None,
        }))
        .await
        .unwrap()
        .into_inner()
}

async fn register(app: &TestApp, n: u32) -> String {
    app.register("M", vec![phone(&format!("+49152000{n:05}"))])
        .await
        .unwrap()
        .name
}

#[tokio::test]
async fn scores_apply_once_and_segments_select_by_rfm_segment_and_predicted_tag() {
    let log = FakeAnalyticsLog::default();
    let app = following(&log).await;
    let a = register(&app, 1).await;
    let b = register(&app, 2).await;
    let c = register(&app, 3).await;
    let d = register(&app, 4).await;
    let _unscored = register(&app, 5).await;
    let version_a = get(&app, &a).await.version;
    let week = Utc::now() + chrono::Duration::days(7);
    // a: first lost, then at risk and likely to churn; b: at risk only; c: likely
    // to churn but a champion; d: at risk with a prediction already expired.
    log.scored(&a, "lost_low_value", &[]);
    log.scored(&a, "at_risk_loyal", &[("likely_to_churn", week)]);
    log.scored(&b, "at_risk_loyal", &[]);
    log.scored(&c, "champion", &[("likely_to_churn", week)]);
    let end = log.scored(
        &d,
        "at_risk_loyal",
        &[("likely_to_churn", Utc::now() - chrono::Duration::seconds(1))],
    );
    applied(&app, end).await;

    // Each of a's two events applied once, though each batch came twice.
    let member = get(&app, &a).await;
    assert_eq!(member.version, version_a + 2);
    assert_eq!(member.rfm_segment, "at_risk_loyal");
    let predicted: Vec<(&str, &str, bool, &str)> = member
        .tags
        .iter()
        .map(|t| (t.path.as_str(), t.category.as_str(), t.dynamic, t.source.as_str()))
        .collect();
    assert_eq!(
        predicted,
        vec![("predicted/likely_to_churn", "predicted", true, "analytics")]
    );
    assert_eq!(member.tags[0].expire_time.unwrap().seconds, week.timestamp());
    // d's expired prediction is not shown.
    assert!(get(&app, &d).await.tags.is_empty());

    let at_risk_churning = segment(
        &app,
        rule(R::All(pb::RuleGroup {
            rules: vec![rfm(&["at_risk_loyal"]), tag("predicted/likely_to_churn")],
        })),
    )
    .await
    .unwrap();
    assert_eq!(members_of(&app, &at_risk_churning.name).await, (1, vec![a.clone()]));
    let at_risk = segment(&app, rfm(&["at_risk_loyal"])).await.unwrap();
    let mut want = vec![a.clone(), b.clone(), d.clone()];
    want.sort();
    assert_eq!(members_of(&app, &at_risk.name).await, (3, want));
    // The category matches every prediction.
    let churning = segment(&app, tag("predicted")).await.unwrap();
    let mut want = vec![a.clone(), c.clone()];
    want.sort();
    assert_eq!(members_of(&app, &churning.name).await, (2, want));

    // A later score replaces the predictions: b's tag expires in 3 seconds and
    // stops matching then; a no longer churns, its tag is gone.
    let soon = Utc::now() + chrono::Duration::seconds(3);
    log.scored(&a, "at_risk_loyal", &[]);
    let end = log.scored(&b, "at_risk_loyal", &[("likely_to_churn", soon)]);
    applied(&app, end).await;
    assert!(get(&app, &a).await.tags.is_empty());
    assert_eq!(members_of(&app, &at_risk_churning.name).await, (1, vec![b.clone()]));
    tokio::time::sleep((soon - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(200)).await;
    assert_eq!(members_of(&app, &at_risk_churning.name).await, (0, vec![]));

    // Not scored any more: no segment, no predictions.
    let end = log.scored(&c, "", &[]);
    applied(&app, end).await;
    let member = get(&app, &c).await;
    assert_eq!((member.rfm_segment.as_str(), member.tags.len()), ("", 0));
}

#[tokio::test]
async fn a_score_of_a_merged_member_lands_on_its_survivor() {
    let log = FakeAnalyticsLog::default();
    let app = following(&log).await;
    let survivor = register(&app, 11).await;
    let merged = register(&app, 12).await;
    app.client()
        .merge_members(authed(pb::MergeMembersRequest {
            survivor: survivor.clone(),
            merged: merged.clone(),
            reason: "duplicate".into(),
            request_id: String::new(),
        }))
        .await
        .unwrap();
    let week = Utc::now() + chrono::Duration::days(7);
    let end = log.scored(&merged, "cannot_lose", &[("likely_to_churn", week)]);
    applied(&app, end).await;
    let member = get(&app, &survivor).await;
    assert_eq!(member.rfm_segment, "cannot_lose");
    assert_eq!(member.tags.len(), 1);
    assert_eq!(member.tags[0].path, "predicted/likely_to_churn");
    // A member unknown to membership is passed over; the log goes on.
    log.scored("members/00000000-0000-0000-0000-000000000000", "champion", &[]);
    let end = log.scored(&survivor, "champion", &[]);
    applied(&app, end).await;
    assert_eq!(get(&app, &survivor).await.rfm_segment, "champion");
}

#[tokio::test]
async fn an_rfm_condition_names_known_segments() {
    let app = spawn_app().await;
    let bad = rule(R::All(pb::RuleGroup {
        rules: vec![rfm(&["at_risk", "champion"]), rfm(&[])],
    }));
    let err = segment(&app, bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut fields = violated_fields(&err);
    fields.sort();
    fields.dedup();
    assert_eq!(
        fields,
        vec![
            "segment.rule.all.rules[0].rfm_segment.segments",
            "segment.rule.all.rules[1].rfm_segment.segments",
        ]
    );
    let ok = segment(&app, rfm(&["at_risk_loyal", "lost_low_value"])).await.unwrap();
    let back = ok.rule.unwrap();
    assert_eq!(
        back,
        rfm(&["at_risk_loyal", "lost_low_value"]),
        "the rule reads back as saved"
    );
}

#[tokio::test]
async fn predictions_do_not_count_against_the_members_own_tags() {
    let log = FakeAnalyticsLog::default();
    let app = following(&log).await;
    let m = register(&app, 21).await;
    let set_tags = |set: Vec<pb::Tag>| {
        let mut client = app.client();
        let name = m.clone();
        async move {
            client
                .set_tags(authed(pb::SetTagsRequest {
                    name,
                    set,
                    remove_paths: vec![],
                }))
                .await
        }
    };
    // The member's own 100 tags, the most it may hold.
    let own: Vec<pb::Tag> = (0..100)
        .map(|i| pb::Tag {
            path: format!("interest/t{i}"),
            ..Default::default()
        })
        .collect();
    set_tags(own).await.unwrap();
    let end = log.scored(
        &m,
        "champion",
        &[("likely_to_churn", Utc::now() + chrono::Duration::days(7))],
    );
    applied(&app, end).await;
    assert_eq!(get(&app, &m).await.tags.len(), 101);
    // Replacing one of its own still fits; a 101st of its own does not.
    let one = |path: &str| {
        vec![pb::Tag {
            path: path.into(),
            value: "x".into(),
            ..Default::default()
        }]
    };
    set_tags(one("interest/t0")).await.unwrap();
    let err = set_tags(one("interest/t100")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}
