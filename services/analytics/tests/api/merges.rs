//! Merged members are one person in the member-level figures: the purchases of a
//! member merged into another (`MembersMerged`), before and after the merge, are
//! the survivor's; chains of merges end at the last survivor.

use helpers::*;
use prost::Message;
use retail_proto::analytics as pb;
use retail_proto::events as ev;
use retail_testkit::TestDatabase;

use crate::{T0, helpers};

/// Serves `sources` of `logs`, starts analytics on them and waits until it
/// applied each to its end.
async fn step(database: &TestDatabase, logs: &FakeLogs, sources: &[&'static str]) -> TestApp {
    let mut served = Vec::new();
    for source in sources {
        served.push((*source, logs.serve(source).await));
    }
    let app = start(database, &served, |_| {}).await;
    let ends: Vec<(&str, u64)> = sources.iter().map(|s| (*s, logs.len(s))).collect();
    app.caught_up(&ends).await;
    app
}

fn paid(logs: &FakeLogs, order: &str, member: &str, at: i64, amount: i64) {
    logs.push(
        "orders",
        member,
        at,
        &ev::OrderPaid {
            order_id: order.into(),
            parties: parties(member, "store", "BER"),
            lines: vec![line("S1", 1, amount)],
            amount: money(amount),
            pay_time: ts(at),
        },
    );
}

fn merge(logs: &FakeLogs, id: &str, merged: &str, survivor: &str, at: i64) {
    logs.push(
        "membership",
        survivor,
        at,
        &ev::MembersMerged {
            merge_id: id.into(),
            survivor_id: survivor.into(),
            merged_id: merged.into(),
            points_transferred: 0,
            merge_time: ts(at),
        },
    );
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

/// Members a, b, t, x, y, z. Before the merges: a buys at T0 (1000) and T0+4d
/// (2000), b at T0+2d (500) and T0+6d (1500); t, the twin, buys what a and b buy
/// together; x at T0+1d (100), y at T0+3d (200), z at T0+5d (300); x and z are
/// contacted by campaigns at T0+7d (sleeping, window to T0+14d). Then a is merged into b
/// (T0+10d), x into y (T0+8d) and y into z (T0+9d): a chain. After the merges a
/// buys at T0+12d (1000, b's, and t too) and x at T0+13d (400, z's).
#[tokio::test]
async fn a_merged_members_purchases_count_as_its_survivors_also_along_chains() {
    let logs = FakeLogs {
        batch: 100,
        ..Default::default()
    };
    for m in ["a", "b", "t", "x", "y", "z"] {
        logs.push(
            "membership",
            m,
            T0 - 100 * DAY,
            &ev::MemberRegistered {
                member_id: m.into(),
                region: "DE-BE".into(),
                register_time: ts(T0 - 100 * DAY),
            },
        );
    }
    // x's survivor z is contacted by another campaign too: one person, counted once.
    for (campaign, member) in [("c1", "x"), ("c2", "z")] {
        logs.push(
            "membership",
            member,
            T0 + 7 * DAY,
            &ev::CampaignMemberDecided {
                campaign_id: campaign.into(),
                member_id: member.into(),
                channel: "email".into(),
                outcome: "contacted".into(),
                control: false,
                lifecycle_state: "sleeping".into(),
                decide_time: ts(T0 + 7 * DAY),
                attribution_end_time: ts(T0 + 14 * DAY),
            },
        );
    }
    for (order, member, at, amount) in [
        ("o-a1", "a", T0, 1_000),
        ("o-a2", "a", T0 + 4 * DAY, 2_000),
        ("o-b1", "b", T0 + 2 * DAY, 500),
        ("o-b2", "b", T0 + 6 * DAY, 1_500),
        ("o-t1", "t", T0, 1_000),
        ("o-t2", "t", T0 + 2 * DAY, 500),
        ("o-t3", "t", T0 + 4 * DAY, 2_000),
        ("o-t4", "t", T0 + 6 * DAY, 1_500),
        ("o-x1", "x", T0 + DAY, 100),
        ("o-y1", "y", T0 + 3 * DAY, 200),
        ("o-z1", "z", T0 + 5 * DAY, 300),
    ] {
        paid(&logs, order, member, at, amount);
    }
    let database = TestDatabase::new().await.unwrap();
    // Registrations first, then the orders before the merges.
    step(&database, &logs, &["membership"]).await.task.abort();
    let app = step(&database, &logs, &["membership", "orders"]).await;
    // Scored before the merges: all six.
    assert_eq!(app.app.publish_scores(T0 + 7 * DAY).await.unwrap(), 6);
    app.task.abort();

    // The merges, applied to the purchases analytics has; then purchases of
    // merged members.
    merge(&logs, "g1", "x", "y", T0 + 8 * DAY);
    merge(&logs, "g2", "y", "z", T0 + 9 * DAY);
    merge(&logs, "g3", "a", "b", T0 + 10 * DAY);
    step(&database, &logs, &["membership"]).await.task.abort();
    paid(&logs, "o-a3", "a", T0 + 12 * DAY, 1_000);
    paid(&logs, "o-t5", "t", T0 + 12 * DAY, 1_000);
    paid(&logs, "o-x2", "x", T0 + 13 * DAY, 400);
    let app = step(&database, &logs, &["membership", "orders"]).await;
    let mut kpis = app.kpis.clone();
    let as_of = T0 + 20 * DAY;

    // RFM at T0+20d: b as its twin t, 5 purchases, 6000, last at T0+12d (8 days);
    // z 4 purchases, 1000, last at T0+13d (7 days). Scores of three: R b,t 1 and
    // z 4; F b,t 2 and z 1; M b,t 2 and z 1.
    let rfm = kpis
        .list_member_rfm(reader(pb::ListMemberRfmRequest {
            as_of_time: ts(as_of),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let got: Vec<(&str, i64, i64, i64, i32, i32, i32)> = rfm
        .members
        .iter()
        .map(|m| {
            (
                m.member_id.as_str(),
                m.recency_days,
                m.frequency,
                m.monetary_minor,
                m.r_score,
                m.f_score,
                m.m_score,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("b", 8, 5, 6_000, 1, 2, 2),
            ("t", 8, 5, 6_000, 1, 2, 2),
            ("z", 7, 4, 1_000, 4, 1, 1),
        ]
    );
    let (b, t, z) = (&rfm.members[0], &rfm.members[1], &rfm.members[2]);
    assert_eq!(b.segment, t.segment);
    // Cycles: b 12 days over 4 gaps = 3, next T0+15d; z 12 days over 3 gaps = 4.
    assert!(close(b.cycle_days, 3.0));
    assert_eq!(b.next_purchase_time.unwrap().seconds, T0 + 15 * DAY);
    assert!(close(z.cycle_days, 4.0));
    let dist = kpis
        .get_rfm_distribution(reader(pb::GetRfmDistributionRequest {
            as_of_time: ts(as_of),
            window_days: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dist.segments.iter().map(|s| s.members).sum::<i64>(), 3);
    assert_eq!(dist.segments.iter().map(|s| s.monetary_minor).sum::<i64>(), 13_000);
    assert!(close(dist.mean_r_score, 2.0));
    assert!(close(dist.mean_f_score, 5.0 / 3.0));

    // Overdue at T0+20d (factor 1.5): b 8 days > 3 x 1.5, z 7 days > 4 x 1.5.
    let overdue = kpis
        .list_overdue_members(reader(pb::ListOverdueMembersRequest {
            as_of_time: ts(as_of),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let got: Vec<(&str, i64)> = overdue
        .members
        .iter()
        .map(|m| (m.member_id.as_str(), m.days_since_last))
        .collect();
    assert_eq!(got, vec![("b", 8), ("t", 8), ("z", 7)]);
    assert!(close(overdue.members[0].cycle_days, 3.0));
    assert_eq!(overdue.members[0].next_purchase_time.unwrap().seconds, T0 + 15 * DAY);
    assert!(close(overdue.members[2].cycle_days, 4.0));
    assert_eq!(app.app.publish_overdue(as_of).await.unwrap(), 3);

    // Pyramid of [T0+4d, T0+20d): b (4500, 3 orders), t (4500, 3) and z (700, 2),
    // all of whom first bought before the period (z through x at T0+1d), ranked.
    let pyramid = kpis
        .get_pyramid(reader(pb::GetPyramidRequest {
            period: period(T0 + 4 * DAY, as_of),
        }))
        .await
        .unwrap()
        .into_inner();
    let (base, ranked): (Vec<_>, Vec<_>) = pyramid.layers.iter().partition(|l| l.layer == "base");
    assert_eq!((base[0].headcount, base[0].revenue_minor), (0, 0));
    assert_eq!(ranked.iter().map(|l| l.headcount).sum::<i64>(), 3);
    assert_eq!(ranked.iter().map(|l| l.revenue_minor).sum::<i64>(), 9_700);
    assert_eq!(ranked.iter().map(|l| l.orders).sum::<i64>(), 8);

    // Stickiness of [T0, T0+20d): three customers, each bought again; ARPU
    // 13000 / 3; the June cohort holds three. x, contacted, bought as z at T0+13d.
    let sticky = kpis
        .get_stickiness(reader(pb::GetStickinessRequest {
            period: period(T0, as_of),
            window_days: 90,
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(close(sticky.repeat_purchase_rate, 1.0));
    assert!(close(sticky.active_arpu_minor, 13_000.0 / 3.0));
    assert_eq!(sticky.cohorts[0].customers, 3);
    let wake = sticky.wake_up.unwrap();
    assert_eq!((wake.members, wake.bought_again), (1, 1));
    let life = kpis
        .get_lifecycle(reader(pb::GetLifecycleRequest {
            period: period(T0, as_of),
            window_days: 90,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(life.distribution.iter().map(|c| c.members).sum::<i64>(), 3);
    let value = kpis
        .get_customer_value(reader(pb::GetCustomerValueRequest {
            period: period(T0, as_of),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(value.channels.iter().map(|c| c.customers).sum::<i64>(), 3);

    // Scores: the merged members get no empty score (membership would land it on
    // their survivors); each was scored once, before the merges.
    app.app.publish_scores(as_of).await.unwrap();
    let scored = retail_analytics::store::rows(
        &app.app.db,
        "SELECT payload FROM outbox WHERE event_type = ?",
        vec!["retail.events.v1.MemberScored".into()],
    )
    .await
    .unwrap();
    for merged in ["a", "x", "y"] {
        let of = scored
            .iter()
            .map(|r| ev::MemberScored::decode(r.try_get_by_index::<Vec<u8>>(0).unwrap().as_slice()).unwrap())
            .filter(|e| e.member_id == merged)
            .count();
        assert_eq!(of, 1, "{merged}");
    }

    // The merges map each merged id to its final survivor; a rebuild from the
    // archive reproduces the projections.
    let merges = dump(&app.app.db).await["member_merges"].clone();
    assert_eq!(
        merges,
        vec![
            format!("a|b|{}", T0 + 10 * DAY),
            format!("x|z|{}", T0 + 8 * DAY),
            format!("y|z|{}", T0 + 9 * DAY),
        ]
    );
    let before = dump(&app.app.db).await;
    app.app.rebuild().await.unwrap();
    assert_eq!(dump(&app.app.db).await, before);
    app.task.abort();
}

/// A merge delivered again changes nothing; a merge of a member with no
/// purchases moves nothing.
#[tokio::test]
async fn a_merge_delivered_again_changes_nothing() {
    let logs = FakeLogs {
        batch: 100,
        ..Default::default()
    };
    paid(&logs, "o1", "a", T0, 1_000);
    paid(&logs, "o2", "b", T0 + DAY, 2_000);
    merge(&logs, "g1", "a", "b", T0 + 2 * DAY);
    merge(&logs, "g1", "a", "b", T0 + 2 * DAY);
    merge(&logs, "g2", "e", "b", T0 + 3 * DAY);
    let database = TestDatabase::new().await.unwrap();
    step(&database, &logs, &["orders"]).await.task.abort();
    let app = step(&database, &logs, &["membership"]).await;
    let rfm = app.app.rfm(T0 + 10 * DAY, 365).await.unwrap().0;
    let got: Vec<(&str, i64, i64)> = rfm
        .iter()
        .map(|m| (m.member.as_str(), m.frequency, m.monetary))
        .collect();
    assert_eq!(got, vec![("b", 2, 3_000)]);
    let members = dump(&app.app.db).await["members"].clone();
    // b's first purchase is a's (T0), a's facts are cleared.
    assert!(
        members.contains(&format!("b|-|||{}|0|store|{}|{}", T0 + DAY, T0, T0 + DAY)),
        "{members:?}"
    );
    assert!(members.contains(&format!("a|-|||{T0}|0||-|-")), "{members:?}");
    app.task.abort();
}
