//! Membership driven over gRPC on port 0, on SQLite or PostgreSQL, with the
//! in-process cache or Redis.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

mod cache;
mod contacts;
mod delivery;
mod engagement;
mod helpers;
mod loyalty;
mod merge;
mod partners;
mod schedules;
mod scores;
mod tier_run;

use std::time::Duration;

use helpers::*;
use prost_types::FieldMask;
use retail_proto::membership::{self as pb};
use tonic::Code;

#[tokio::test]
async fn a_registered_member_is_recognised_by_any_spelling_of_its_identifiers() {
    let app = spawn_app().await;
    let member = app
        .register("Ann", vec![phone("+49 151 1234-5678"), email("Ann@Example.com")])
        .await
        .unwrap();
    assert_eq!(member.tier, "regular");
    assert_eq!(member.lifecycle_state, pb::LifecycleState::Prospect as i32);
    for id in [
        phone("+4915112345678"),
        phone("+49 (151) 12345678"),
        email("ann@example.COM"),
    ] {
        let found = app.identify(id).await.unwrap();
        assert_eq!(found.name, member.name);
    }
    let err = app.identify(phone("+4915100000000")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn an_identifier_belongs_to_one_member_and_a_clash_writes_nothing() {
    let app = spawn_app().await;
    let ann = app.register("Ann", vec![phone("+4915111111111")]).await.unwrap();
    let err = app
        .register("Bob", vec![email("bob@example.com"), phone("+49 151 11111111")])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    // Bob's email was not written either: it is still free.
    let bob = app.register("Bob", vec![email("bob@example.com")]).await.unwrap();
    let err = app
        .client()
        .add_identifier(authed(pb::AddIdentifierRequest {
            name: bob.name.clone(),
            identifier: Some(phone("+4915111111111")),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(app.identify(phone("+4915111111111")).await.unwrap().name, ann.name);
}

#[tokio::test]
async fn register_is_idempotent_by_request_id_even_when_retries_race() {
    let app = spawn_app().await;
    let request = pb::RegisterMemberRequest {
        member: Some(pb::Member {
            display_name: "Cleo".into(),
            identifiers: vec![email("cleo@example.com")],
            attributes: [("shoe_size".to_string(), "39".to_string())].into(),
            ..Default::default()
        }),
        request_id: "register-cleo".into(),
    };
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let mut client = app.client();
            let request = authed(request.clone());
            tokio::spawn(async move { client.register_member(request).await })
        })
        .collect();
    let mut names = std::collections::HashSet::new();
    for t in tasks {
        names.insert(t.await.unwrap().unwrap().into_inner().name);
    }
    assert_eq!(names.len(), 1);
}

#[tokio::test]
async fn a_read_after_a_committed_update_never_returns_the_old_profile() {
    let app = spawn_app().await;
    let member = app.register("Dan", vec![phone("+4915122222222")]).await.unwrap();
    for round in 0..20 {
        // Warm the cache, update, read again: the new value must be served.
        app.identify(phone("+4915122222222")).await.unwrap();
        let name = format!("Dan {round}");
        app.client()
            .update_member(authed(pb::UpdateMemberRequest {
                member: Some(pb::Member {
                    name: member.name.clone(),
                    display_name: name.clone(),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["display_name".into()],
                }),
            }))
            .await
            .unwrap();
        let got = app
            .client()
            .get_member(authed(pb::GetMemberRequest {
                name: member.name.clone(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.display_name, name);
        assert_eq!(app.identify(phone("+4915122222222")).await.unwrap().display_name, name);
    }
}

#[tokio::test]
async fn tags_consents_and_export_keep_their_history() {
    let app = spawn_app().await;
    let member = app.register("Eve", vec![email("eve@example.com")]).await.unwrap();
    app.client()
        .set_tags(authed(pb::SetTagsRequest {
            name: member.name.clone(),
            set: vec![
                pb::Tag {
                    path: "interest/outdoor/hiking".into(),
                    source: "crm".into(),
                    ..Default::default()
                },
                pb::Tag {
                    path: "last_category".into(),
                    value: "shoes".into(),
                    dynamic: true,
                    source: "orders".into(),
                    ..Default::default()
                },
            ],
            remove_paths: vec![],
        }))
        .await
        .unwrap();
    for granted in [true, false, true] {
        app.client()
            .set_consent(authed(pb::SetConsentRequest {
                name: member.name.clone(),
                consent: Some(pb::Consent {
                    channel: pb::ConsentChannel::Sms as i32,
                    granted,
                    source: "pos".into(),
                    update_time: None,
                }),
            }))
            .await
            .unwrap();
    }
    let listed = app
        .client()
        .list_members(authed(pb::ListMembersRequest {
            tag: "interest/outdoor".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .members;
    assert_eq!(listed.len(), 1);
    let export = app
        .client()
        .export_member(authed(pb::ExportMemberRequest {
            name: member.name.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    let m = export.member.unwrap();
    assert_eq!(m.tags.len(), 2);
    assert_eq!(m.consents.len(), 1);
    assert!(m.consents[0].granted);
    assert_eq!(
        export.consent_history.iter().map(|c| c.granted).collect::<Vec<_>>(),
        [true, false, true]
    );
}

#[tokio::test]
async fn erasure_removes_personal_data_everywhere_and_the_cache_forgets_at_once() {
    let app = spawn_app().await;
    let member = app
        .register(
            "Fay Secretname",
            vec![phone("+4915133333333"), email("fay.secret@example.com")],
        )
        .await
        .unwrap();
    // Warm the cache entries first: identifier, profile and tier.
    app.identify(phone("+4915133333333")).await.unwrap();
    let tier_read = masked(&app, &member.name, &["name", "tier"]).await.unwrap();
    assert_eq!(tier_read.tier, "regular");
    app.client()
        .erase_member(authed(pb::EraseMemberRequest {
            name: member.name.clone(),
            reason: "member request".into(),
        }))
        .await
        .unwrap();
    assert_eq!(
        app.identify(phone("+4915133333333")).await.unwrap_err().code(),
        Code::NotFound
    );
    for call in [
        app.client()
            .get_member(authed(pb::GetMemberRequest {
                name: member.name.clone(),
                ..Default::default()
            }))
            .await
            .map(|_| ()),
        app.client()
            .export_member(authed(pb::ExportMemberRequest {
                name: member.name.clone(),
            }))
            .await
            .map(|_| ()),
        // A read of the member row alone refuses the erased member too ...
        masked(&app, &member.name, &["name", "points_balance"])
            .await
            .map(|_| ()),
        // ... and so does the (cached) tier read.
        masked(&app, &member.name, &["name", "tier"]).await.map(|_| ()),
    ] {
        assert_eq!(call.unwrap_err().code(), Code::NotFound);
    }
    use sea_orm::EntityTrait;
    let dump = format!(
        "{:?}{:?}{:?}",
        retail_membership::store::member::Entity::find()
            .all(&app.db)
            .await
            .unwrap(),
        retail_membership::store::identifier::Entity::find()
            .all(&app.db)
            .await
            .unwrap(),
        retail_membership::store::tag::Entity::find()
            .all(&app.db)
            .await
            .unwrap(),
    );
    for pii in ["Secretname", "33333333", "fay.secret"] {
        assert!(!dump.contains(pii), "{pii} survived erasure");
    }
    if let Some(url) = retail_testkit::redis_url() {
        let client = redis::Client::open(url).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", app.namespace))
            .query_async(&mut conn)
            .await
            .unwrap();
        for key in keys.iter().filter(|k| !k.contains(":fence:")) {
            let value: Option<Vec<u8>> = redis::cmd("HGET")
                .arg(key)
                .arg("p")
                .query_async(&mut conn)
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&value.unwrap_or_default()).into_owned();
            assert!(
                !text.contains("Secretname") && !text.contains("fay.secret"),
                "{key} keeps PII"
            );
        }
    }
    // The phone number is free again for a new registration.
    app.register("Someone", vec![phone("+4915133333333")]).await.unwrap();
}

#[tokio::test]
async fn with_redis_unreachable_identify_still_answers() {
    let app = spawn_app_with(|s| {
        s.cache.redis_url = Some("redis://127.0.0.1:1".into());
        s.cache.timeout_ms = 20;
    })
    .await;
    let member = app.register("Gus", vec![phone("+4915144444444")]).await.unwrap();
    for _ in 0..3 {
        assert_eq!(app.identify(phone("+4915144444444")).await.unwrap().name, member.name);
    }
    assert!(app.cache.stats.fallbacks.load(std::sync::atomic::Ordering::Relaxed) > 0);
}

#[tokio::test]
async fn fifty_concurrent_identifies_of_a_cold_member_load_it_once() {
    let app = spawn_app().await;
    app.register("Hal", vec![phone("+4915155555555")]).await.unwrap();
    let before = app.cache.stats.loads.load(std::sync::atomic::Ordering::SeqCst);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let mut client = app.client();
            tokio::spawn(async move {
                client
                    .identify_member(authed(pb::IdentifyMemberRequest {
                        identifier: Some(phone("+4915155555555")),
                    }))
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let loads = app.cache.stats.loads.load(std::sync::atomic::Ordering::SeqCst) - before;
    // One load of the identifier mapping and one of the profile.
    assert!(loads <= 2, "{loads} database loads");
}

#[tokio::test]
async fn registration_publishes_an_event_without_personal_data() {
    let app = spawn_app().await;
    let member = app
        .register("Ida Private", vec![phone("+4915166666666")])
        .await
        .unwrap();
    let mut log = retail_proto::events::event_log_service_client::EventLogServiceClient::new(app.channel.clone());
    let mut stream = log
        .subscribe(authed(retail_proto::events::SubscribeRequest {
            after_position: 0,
            max_batch_size: 10,
        }))
        .await
        .unwrap()
        .into_inner();
    let batch = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let event = &batch.events[0];
    assert_eq!(event.position, 1);
    assert_eq!(event.r#type, "retail.events.v1.MemberRegistered");
    assert_eq!(format!("members/{}", event.aggregate_id), member.name);
    let payload = &event.payload.as_ref().unwrap().value;
    assert!(!String::from_utf8_lossy(payload).contains("Private"));
    assert!(!String::from_utf8_lossy(payload).contains("66666666"));
}

#[tokio::test]
async fn bad_input_gets_precise_errors_and_writes_nothing() {
    let app = spawn_app().await;
    let mut c = app.client();
    let member = |ids: Vec<pb::Identifier>| pb::RegisterMemberRequest {
        member: Some(pb::Member {
            identifiers: ids,
            ..Default::default()
        }),
        request_id: String::new(),
    };
    let cases: Vec<(&str, tonic::Status, Code, Vec<&str>)> = vec![
        (
            "no identifiers",
            c.register_member(authed(member(vec![]))).await.unwrap_err(),
            Code::InvalidArgument,
            vec!["member.identifiers"],
        ),
        (
            "bad phone and email",
            c.register_member(authed(member(vec![phone("0151 123"), email("nope@")])))
                .await
                .unwrap_err(),
            Code::InvalidArgument,
            vec!["member.identifiers[0].value", "member.identifiers[1].value"],
        ),
        (
            "duplicate identifier in one request",
            c.register_member(authed(member(vec![phone("+4915177777777"), phone("+49 151 77777777")])))
                .await
                .unwrap_err(),
            Code::InvalidArgument,
            vec!["member.identifiers[1]"],
        ),
        (
            "unknown member",
            c.get_member(authed(pb::GetMemberRequest {
                name: format!("members/{}", uuid::Uuid::new_v4()),
                ..Default::default()
            }))
            .await
            .unwrap_err(),
            Code::NotFound,
            vec![],
        ),
        (
            "malformed name",
            c.get_member(authed(pb::GetMemberRequest {
                name: "members/1".into(),
                ..Default::default()
            }))
            .await
            .unwrap_err(),
            Code::InvalidArgument,
            vec!["name"],
        ),
        (
            "oversized tag list",
            c.set_tags(authed(pb::SetTagsRequest {
                name: format!("members/{}", uuid::Uuid::new_v4()),
                set: (0..101)
                    .map(|i| pb::Tag {
                        path: format!("t{i}"),
                        ..Default::default()
                    })
                    .collect(),
                remove_paths: vec![],
            }))
            .await
            .unwrap_err(),
            Code::InvalidArgument,
            vec!["set"],
        ),
        (
            "future birth date",
            c.register_member(authed(pb::RegisterMemberRequest {
                member: Some(pb::Member {
                    birth_date: "2999-01-01".into(),
                    identifiers: vec![phone("+4915188888888")],
                    ..Default::default()
                }),
                request_id: String::new(),
            }))
            .await
            .unwrap_err(),
            Code::InvalidArgument,
            vec!["member.birth_date"],
        ),
        (
            "unspecified consent channel",
            c.set_consent(authed(pb::SetConsentRequest {
                name: format!("members/{}", uuid::Uuid::new_v4()),
                consent: Some(pb::Consent {
                    source: "pos".into(),
                    ..Default::default()
                }),
            }))
            .await
            .unwrap_err(),
            Code::InvalidArgument,
            vec!["consent.channel"],
        ),
        (
            "without the write scope",
            c.register_member(with_token(
                &token(&["membership.members.read"]),
                member(vec![phone("+4915199999999")]),
            ))
            .await
            .unwrap_err(),
            Code::PermissionDenied,
            vec![],
        ),
    ];
    for (what, status, code, fields) in cases {
        assert_eq!(status.code(), code, "{what}: {}", status.message());
        assert_eq!(violated_fields(&status), fields, "{what}");
    }
    let all = c
        .list_members(authed(pb::ListMembersRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .members;
    assert!(all.is_empty(), "no bad request wrote a member");
}

/// Tags and consents given with the registration are stored with it, in its
/// transaction (they used to be dropped without a word); bad ones are refused by
/// field, and then nothing is registered.
#[tokio::test]
async fn tags_and_consents_given_at_registration_are_stored_with_the_member() {
    let app = spawn_app().await;
    let registration = |tags: Vec<pb::Tag>, consents: Vec<pb::Consent>| pb::RegisterMemberRequest {
        member: Some(pb::Member {
            display_name: "Gus".into(),
            identifiers: vec![email("gus@example.com")],
            tags,
            consents,
            ..Default::default()
        }),
        request_id: String::new(),
    };
    let tag = |path: &str, value: &str| pb::Tag {
        path: path.into(),
        value: value.into(),
        ..Default::default()
    };
    let consent = |channel: pb::ConsentChannel, granted: bool, source: &str| pb::Consent {
        channel: channel as i32,
        granted,
        source: source.into(),
        update_time: None,
    };
    let err = app
        .client()
        .register_member(authed(registration(
            vec![tag("Not A Path!", ""), tag("interest/outdoor", "")],
            vec![
                consent(pb::ConsentChannel::Unspecified, true, "pos"),
                consent(pb::ConsentChannel::Sms, true, ""),
            ],
        )))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&err),
        [
            "member.tags[0].path",
            "member.consents[0].channel",
            "member.consents[1].source"
        ]
    );
    assert_eq!(
        app.identify(email("gus@example.com")).await.unwrap_err().code(),
        Code::NotFound,
        "a refused registration writes nothing"
    );

    let registered = app
        .client()
        .register_member(authed(registration(
            vec![tag("interest/outdoor", ""), tag("last_category", "shoes")],
            vec![
                consent(pb::ConsentChannel::Sms, true, "pos"),
                consent(pb::ConsentChannel::Email, false, "pos"),
            ],
        )))
        .await
        .unwrap()
        .into_inner();
    let stored = app
        .client()
        .get_member(authed(pb::GetMemberRequest {
            name: registered.name.clone(),
            read_mask: None,
        }))
        .await
        .unwrap()
        .into_inner();
    for member in [&registered, &stored] {
        let tags: Vec<_> = member
            .tags
            .iter()
            .map(|t| (t.path.as_str(), t.value.as_str()))
            .collect();
        assert_eq!(tags, [("interest/outdoor", ""), ("last_category", "shoes")]);
        assert!(
            member
                .tags
                .iter()
                .all(|t| !t.source.is_empty() && t.update_time.is_some())
        );
        let mut consents: Vec<_> = member
            .consents
            .iter()
            .map(|c| (c.channel, c.granted, c.source.as_str()))
            .collect();
        consents.sort();
        assert_eq!(
            consents,
            [
                (pb::ConsentChannel::Sms as i32, true, "pos"),
                (pb::ConsentChannel::Email as i32, false, "pos")
            ]
        );
    }
    let history = app
        .client()
        .export_member(authed(pb::ExportMemberRequest {
            name: registered.name.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .consent_history;
    assert_eq!(history.len(), 2, "the decisions are in the consent history");
}
