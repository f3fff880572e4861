//! Member scores published on analytics' log (`MemberScored`): once per change of
//! segment or predicted tags, renewed before a predicted tag expires, never twice
//! for one change (repeated runs, concurrent runs, a restart).

use helpers::*;
use prost::Message;
use retail_proto::events as ev;

use crate::kpis::shop_app;
use crate::{T0, helpers};

const SCORED: &str = "retail.events.v1.MemberScored";

/// Every `MemberScored` in the outbox, by member, in publishing order per member.
async fn scored(db: &sea_orm::DatabaseConnection) -> Vec<ev::MemberScored> {
    let rows = retail_analytics::store::rows(
        db,
        "SELECT payload FROM outbox WHERE event_type = ? ORDER BY id",
        vec![SCORED.into()],
    )
    .await
    .unwrap();
    let mut out: Vec<ev::MemberScored> = rows
        .iter()
        .map(|r| ev::MemberScored::decode(r.try_get_by_index::<Vec<u8>>(0).unwrap().as_slice()).unwrap())
        .collect();
    out.sort_by(|a, b| a.member_id.cmp(&b.member_id));
    out
}

fn summary(e: &ev::MemberScored) -> (String, i32, i32, i32, String, Vec<(String, i64)>) {
    (
        e.member_id.clone(),
        e.recency_score,
        e.frequency_score,
        e.monetary_score,
        e.rfm_segment.clone(),
        e.predicted_tags
            .iter()
            .map(|t| (t.name.clone(), t.expire_time.unwrap().seconds))
            .collect(),
    )
}

#[tokio::test]
async fn scores_are_published_once_per_change_and_renewed_before_their_tags_expire() {
    let (database, app) = shop_app().await;
    let now = T0 + 10 * DAY;
    // RFM at T0+10d (as in the KPI test): m1 1/2/4 at_risk_loyal, m2 2/1/1
    // lost_low_value, m3 4/2/2 loyal_low_spend. Predicted (factor 1.5): m1 bought
    // at T0+1h and T0+2d, a cycle of 47/24 d, 8 days ago > 2.94 -> likely to
    // churn; m2 bought once (no cycle); m3 bought at T0-5d and T0+6d, a cycle of
    // 11 d, 4 days ago < 16.5. Tags last 7 days.
    let (first, second) = tokio::join!(app.app.publish_scores(now), app.app.publish_scores(now));
    assert_eq!(
        first.unwrap() + second.unwrap(),
        3,
        "concurrent runs publish each change once"
    );
    let events = scored(&app.app.db).await;
    let got: Vec<_> = events.iter().map(summary).collect();
    assert_eq!(
        got,
        vec![
            (
                "m1".into(),
                1,
                2,
                4,
                "at_risk_loyal".into(),
                vec![("likely_to_churn".into(), now + 7 * DAY)]
            ),
            ("m2".into(), 2, 1, 1, "lost_low_value".into(), vec![]),
            ("m3".into(), 4, 2, 2, "loyal_low_spend".into(), vec![]),
        ]
    );
    assert_eq!(events[0].score_time.unwrap().seconds, now);

    // Nothing changed: nothing published, an hour later neither.
    assert_eq!(app.app.publish_scores(now).await.unwrap(), 0);
    assert_eq!(app.app.publish_scores(now + 3_600).await.unwrap(), 0);

    // A restart on the same database publishes no duplicate.
    app.task.abort();
    let app = start(&database, &[], |_| {}).await;
    assert_eq!(app.app.publish_scores(now).await.unwrap(), 0);
    assert_eq!(scored(&app.app.db).await.len(), 3);

    // Half the durability (3.5 d) later m1's tag, still true, is published again
    // with a new expiry; the others are unchanged (R days 12, 11, 8 keep their
    // order, so the scores stay).
    let later = T0 + 14 * DAY;
    assert_eq!(app.app.publish_scores(later).await.unwrap(), 1);
    let events = scored(&app.app.db).await;
    assert_eq!(events.len(), 4);
    let renewed = events.iter().rev().find(|e| e.member_id == "m1").unwrap();
    assert_eq!(
        summary(renewed),
        (
            "m1".into(),
            1,
            2,
            4,
            "at_risk_loyal".into(),
            vec![("likely_to_churn".into(), later + 7 * DAY)]
        )
    );

    // At T0+23d m3 is 17 days past its last purchase, beyond 16.5: its tags
    // changed; m1 was due again at T0+17.5d.
    let much_later = T0 + 23 * DAY;
    assert_eq!(app.app.publish_scores(much_later).await.unwrap(), 2);
    let events = scored(&app.app.db).await;
    let m3 = events.iter().rev().find(|e| e.member_id == "m3").unwrap();
    assert_eq!(
        summary(m3),
        (
            "m3".into(),
            4,
            2,
            2,
            "loyal_low_spend".into(),
            vec![("likely_to_churn".into(), much_later + 7 * DAY)]
        )
    );
    assert_eq!(app.app.publish_scores(much_later).await.unwrap(), 0);
}
