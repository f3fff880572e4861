//! The profile cache while Redis freezes, restarts and loses its scripts: a
//! committed change is never hidden by the cached older profile, and an erased
//! member is never served. Runs on a redis-server of its own, only with Redis.

use std::time::Duration;

use prost_types::FieldMask;
use retail_proto::membership::{self as pb};
use retail_testkit::redis_server::RedisServer;
use tonic::Code;

use crate::helpers::*;

async fn rename(app: &TestApp, member: &str, name: &str) {
    app.client()
        .update_member(authed(pb::UpdateMemberRequest {
            member: Some(pb::Member {
                name: member.into(),
                display_name: name.into(),
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["display_name".into()],
            }),
        }))
        .await
        .unwrap();
}

async fn erase(app: &TestApp, member: &str) {
    app.client()
        .erase_member(authed(pb::EraseMemberRequest {
            name: member.into(),
            reason: "asked to".into(),
        }))
        .await
        .unwrap();
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

/// Reads a member until the cache serves it (so the old profile sits in Redis).
async fn cached(app: &TestApp, id: pb::Identifier) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let hits = app.cache.stats.hits.load(std::sync::atomic::Ordering::SeqCst);
        app.identify(id.clone()).await.unwrap();
        if app.cache.stats.hits.load(std::sync::atomic::Ordering::SeqCst) > hits {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cache never served the member"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What every read must show: Ann under her latest name, Bob (erased) not at all.
async fn check(app: &TestApp, ann: &pb::Member, ann_name: &str, bob: &pb::Member, when: &str) {
    let by_phone = app.identify(phone("+4917000000001")).await.unwrap();
    assert_eq!(
        by_phone.display_name, ann_name,
        "{when}: IdentifyMember served an old profile"
    );
    let by_name = get(app, &ann.name).await.unwrap();
    assert_eq!(
        by_name.display_name, ann_name,
        "{when}: GetMember served an old profile"
    );
    let err = app.identify(phone("+4917000000002")).await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::NotFound,
        "{when}: IdentifyMember served an erased member"
    );
    let err = get(app, &bob.name).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{when}: GetMember served an erased member");
}

/// Reads for `period`, each of which must follow the changes.
async fn keep_checking(
    app: &TestApp,
    ann: &pb::Member,
    ann_name: &str,
    bob: &pb::Member,
    when: &str,
    period: Duration,
) {
    let deadline = tokio::time::Instant::now() + period;
    while tokio::time::Instant::now() < deadline {
        check(app, ann, ann_name, bob, when).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Changes committed while Redis could not take their invalidations (frozen; then
/// restarted without its scripts) used to leave the old profile in Redis for its
/// five-minute TTL, an erased member's name and phone included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_or_erasure_redis_missed_while_frozen_or_restarted_is_never_hidden_by_the_cached_profile() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let url = redis.url();
    let app = spawn_app_with(|s| {
        s.cache.redis_url = Some(url);
        s.cache.timeout_ms = 25;
    })
    .await;
    let ann = app.register("Ann", vec![phone("+4917000000001")]).await.unwrap();
    let bob = app.register("Bob", vec![phone("+4917000000002")]).await.unwrap();
    cached(&app, phone("+4917000000001")).await;
    cached(&app, phone("+4917000000002")).await;

    redis.freeze();
    rename(&app, &ann.name, "Anna").await;
    erase(&app, &bob.name).await;
    check(&app, &ann, "Anna", &bob, "while Redis is frozen").await;
    redis.resume();
    keep_checking(&app, &ann, "Anna", &bob, "after Redis resumed", Duration::from_secs(3)).await;

    // Cached again, then Redis restarts (values and scripts gone) under a change.
    cached(&app, phone("+4917000000001")).await;
    redis.restart();
    rename(&app, &ann.name, "Annette").await;
    keep_checking(
        &app,
        &ann,
        "Annette",
        &bob,
        "after Redis restarted",
        Duration::from_secs(3),
    )
    .await;

    // Scripts flushed while the cached profile stays: the invalidation still lands.
    cached(&app, phone("+4917000000001")).await;
    assert_eq!(redis.command(&["SCRIPT", "FLUSH"]).as_deref(), Some("+OK"));
    rename(&app, &ann.name, "Annika").await;
    keep_checking(
        &app,
        &ann,
        "Annika",
        &bob,
        "after a script flush",
        Duration::from_secs(1),
    )
    .await;
    // The cache works again: Ann is served from it.
    cached(&app, phone("+4917000000001")).await;
}
