//! Campaign messages through the webhook sender: each POSTed to a receiver served
//! here on port 0, signed, the same message id on every try, tried again after a
//! (tiny) backoff across outbox runs and dead-lettered after the last try; the
//! recipient and the body never reach the logs.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use chrono::{Duration, Utc};
use hmac::{Hmac, Mac};
use retail_kit::convert::timestamp;
use retail_proto::membership::engagement_service_client::EngagementServiceClient;
use retail_proto::membership::segment_rule::Rule as R;
use retail_proto::membership::{self as pb};
use sha2::Sha256;
use tonic::transport::Channel;

use crate::helpers::*;

const SECRET: &str = "whsec_test_secret";
const ADDRESS: &str = "pii.recipient@example.com";
const OFFER: &str = "Confidential offer for a {tier} member";

/// One request the receiver got: id, timestamp, signature and body.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
}

/// A receiver that answers 503 to its first `fail_first` requests and 204 after.
async fn receiver(fail_first: usize) -> (SocketAddr, Arc<Mutex<Vec<Received>>>) {
    let got = Arc::new(Mutex::new(Vec::<Received>::new()));
    let seen = got.clone();
    let router = axum::Router::new().route(
        "/messages",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let seen = seen.clone();
            async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                let mut all = seen.lock().unwrap();
                all.push(Received {
                    id: header("webhook-id"),
                    timestamp: header("webhook-timestamp"),
                    signature: header("webhook-signature"),
                    body,
                });
                if all.len() <= fail_first {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, got)
}

async fn webhook_app(receiver: SocketAddr, max_attempts: u32) -> TestApp {
    spawn_app_with(|s| {
        s.engagement.sender = "webhook".into();
        s.engagement.webhook.url = format!("http://{receiver}/messages");
        s.engagement.webhook.secret = SECRET.into();
        s.engagement.webhook.timeout_ms = 5_000;
        s.engagement.webhook.max_attempts = max_attempts;
        s.engagement.webhook.backoff_base_ms = 1;
        s.engagement.webhook.backoff_max_ms = 4;
        s.engagement.webhook.allow_private_addresses = true;
    })
    .await
}

fn engagement(app: &TestApp) -> EngagementServiceClient<Channel> {
    EngagementServiceClient::new(app.channel.clone())
}

/// A consenting member and a running planned e-mail campaign for it; returns the
/// campaign's name after its first run (one message in the outbox, tried once).
async fn one_message(app: &TestApp) -> String {
    let member = app.register("M", vec![email(ADDRESS)]).await.unwrap().name;
    app.client()
        .set_consent(authed(pb::SetConsentRequest {
            name: member,
            consent: Some(pb::Consent {
                channel: pb::ConsentChannel::Email as i32,
                granted: true,
                source: "app".into(),
                update_time: None,
            }),
        }))
        .await
        .unwrap();
    let segment = engagement(app)
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
    let c = engagement(app)
        .create_campaign(authed(pb::CreateCampaignRequest {
            campaign: Some(pb::Campaign {
                display_name: "delivery".into(),
                segment: segment.name,
                channel: pb::ConsentChannel::Email as i32,
                trigger: pb::CampaignTrigger::Planned as i32,
                send_time: Some(timestamp(now)),
                action: pb::CampaignAction::Message as i32,
                message_template: OFFER.into(),
                start_time: Some(timestamp(now - Duration::hours(1))),
                end_time: Some(timestamp(now + Duration::days(7))),
                ..Default::default()
            }),
            request_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    engagement(app)
        .schedule_campaign(authed(pb::ScheduleCampaignRequest { name: c.name.clone() }))
        .await
        .unwrap();
    let state = app.state.clone().unwrap();
    assert_eq!(state.run_campaigns(Utc::now()).await.unwrap(), 1);
    c.name
}

/// Runs the outbox until the receiver got `want` requests (bounded).
async fn deliver_until(app: &TestApp, got: &Arc<Mutex<Vec<Received>>>, want: usize) {
    let state = app.state.clone().unwrap();
    for _ in 0..200 {
        if got.lock().unwrap().len() >= want {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        state.deliver(100).await.unwrap();
    }
}

async fn listed(app: &TestApp, campaign: &str) -> Vec<pb::EngagementMessage> {
    engagement(app)
        .list_messages(authed(pb::ListMessagesRequest {
            parent: campaign.into(),
            page_size: 50,
            page_token: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .messages
}

fn expected_signature(r: &Received) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{}.{}.{}", r.id, r.timestamp, r.body).as_bytes());
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn a_message_is_retried_with_its_id_until_the_receiver_takes_it_signed() {
    let logs = retail_testkit::capture_logs();
    let (addr, got) = receiver(2).await;
    let app = webhook_app(addr, 5).await;
    let campaign = one_message(&app).await;
    deliver_until(&app, &got, 3).await;
    // Further runs send nothing: the message is delivered.
    app.state.clone().unwrap().deliver(100).await.unwrap();
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 3, "two failures, then the success");

    let messages = listed(&app, &campaign).await;
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(m.delivery_state, pb::MessageDeliveryState::Sent as i32);
    assert_eq!(m.attempt_count, 3);
    let id = m.name.rsplit('/').next().unwrap();
    for r in &got {
        assert_eq!(r.id, id, "the same id on every try");
        assert_eq!(r.signature, expected_signature(r));
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["id"], id);
        assert_eq!(body["channel"], "email");
        assert_eq!(body["recipient"], ADDRESS);
        assert_eq!(body["campaign"], campaign.as_str());
        assert_eq!(body["body"], "Confidential offer for a regular member");
    }

    let logged = logs.contents();
    assert!(logged.contains(id), "the tries are logged by message id");
    for pii in [ADDRESS, "Confidential offer", SECRET] {
        assert!(!logged.contains(pii), "{pii} was logged");
    }
}

#[tokio::test]
async fn a_message_the_receiver_always_refuses_is_dead_lettered_after_the_last_try() {
    let logs = retail_testkit::capture_logs();
    let (addr, got) = receiver(usize::MAX).await;
    let app = webhook_app(addr, 3).await;
    let campaign = one_message(&app).await;
    deliver_until(&app, &got, 3).await;
    // Dead: no further tries.
    for _ in 0..5 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        app.state.clone().unwrap().deliver(100).await.unwrap();
    }
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|r| r.id == got[0].id));

    let messages = listed(&app, &campaign).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].delivery_state, pb::MessageDeliveryState::Dead as i32);
    assert_eq!(messages[0].attempt_count, 3);
    assert!(messages[0].send_time.is_none());

    let logged = logs.contents();
    assert!(logged.contains("dead-lettered"));
    for pii in [ADDRESS, "Confidential offer", SECRET] {
        assert!(!logged.contains(pii), "{pii} was logged");
    }
}
