//! Wake-up and reactivation rates from membership's campaign decisions, computed
//! by hand below; a decision delivered again or imported again counts once, and
//! the rebuild from the archive reproduces the projection.

use helpers::*;
use retail_proto::analytics as pb;
use retail_proto::events as ev;
use retail_testkit::TestDatabase;

use crate::{T0, helpers};

/// The attribution window of the campaigns below.
const WINDOW: i64 = 14 * DAY;

fn decided(logs: &FakeLogs, campaign: &str, member: &str, outcome: &str, lifecycle: &str, at: i64) {
    logs.push(
        "membership",
        member,
        at,
        &ev::CampaignMemberDecided {
            campaign_id: campaign.into(),
            member_id: member.into(),
            channel: "email".into(),
            outcome: outcome.into(),
            control: outcome == "control",
            lifecycle_state: lifecycle.into(),
            decide_time: ts(at),
            attribution_end_time: ts(at + WINDOW),
        },
    );
}

fn paid(logs: &FakeLogs, order: &str, member: &str, at: i64) {
    logs.push(
        "orders",
        member,
        at,
        &ev::OrderPaid {
            order_id: order.into(),
            parties: parties(member, "online", ""),
            lines: vec![line("S1", 1, 1_000)],
            amount: money(1_000),
            pay_time: ts(at),
        },
    );
}

/// The period is [T0, T0 + 10d); campaign c1 decides at T0 + 1d (window until
/// T0 + 15d).
///
/// Sleeping, contacted: s1 buys at T0+3d (yes, and c2 contacts it again: it
/// counts once); s2 at the window's last second T0+15d (yes); s3 a day after the
/// window (no); s4 before the contact (no); s5 at the contact's very second (no);
/// s6 buys at T0+2d but the order is cancelled (no). s7 was contacted before the
/// period and s8 after it: neither counts. Wake-up 2 / 6.
///
/// Sleeping control: k1 buys at T0+5d (yes), k2 never (no): 1 / 2.
///
/// Lost, contacted: l1 buys at T0+4d (yes); l2 never (no); l4 is merged into l9
/// at T0+2d and l9 buys at T0+6d (yes: one person). l3 was held back by the
/// frequency cap and buys: not counted at all. Reactivation 2 / 3.
///
/// Lost control: k3 buys at T0+20d, after its window: 0 / 1.
pub(crate) fn campaign_history() -> FakeLogs {
    let logs = FakeLogs {
        batch: 5,
        ..Default::default()
    };
    logs.push(
        "membership",
        "c1",
        T0,
        &ev::CampaignChanged {
            campaign_id: "c1".into(),
            display_name: "We miss you".into(),
            state: "running".into(),
            segment_id: "seg-1".into(),
            channel: "email".into(),
            change_time: ts(T0),
        },
    );
    let at = T0 + DAY;
    for m in ["s1", "s2", "s3", "s4", "s5", "s6"] {
        decided(&logs, "c1", m, "contacted", "sleeping", at);
    }
    decided(&logs, "c0", "s7", "contacted", "sleeping", T0 - 2 * DAY);
    decided(&logs, "c3", "s8", "contacted", "sleeping", T0 + 11 * DAY);
    decided(&logs, "c2", "s1", "contacted", "sleeping", T0 + 2 * DAY);
    for m in ["k1", "k2"] {
        decided(&logs, "c1", m, "control", "sleeping", at);
    }
    for m in ["l1", "l2", "l4"] {
        decided(&logs, "c1", m, "contacted", "lost", at);
    }
    decided(&logs, "c1", "l3", "capped", "lost", at);
    decided(&logs, "c1", "k3", "control", "lost", at);
    // A decision delivered again (a republished event) changes nothing.
    decided(&logs, "c1", "s3", "contacted", "sleeping", at);
    logs.push(
        "membership",
        "l9",
        T0 + 2 * DAY,
        &ev::MembersMerged {
            merge_id: "mg-1".into(),
            survivor_id: "l9".into(),
            merged_id: "l4".into(),
            points_transferred: 0,
            merge_time: ts(T0 + 2 * DAY),
        },
    );
    paid(&logs, "o-s1", "s1", T0 + 3 * DAY);
    paid(&logs, "o-s2", "s2", at + WINDOW);
    paid(&logs, "o-s3", "s3", at + WINDOW + DAY);
    paid(&logs, "o-s4", "s4", T0 + DAY / 2);
    paid(&logs, "o-s5", "s5", at);
    paid(&logs, "o-s6", "s6", T0 + 2 * DAY);
    logs.push(
        "orders",
        "s6",
        T0 + 2 * DAY + 3_600,
        &ev::OrderCancelled {
            order_id: "o-s6".into(),
            parties: parties("s6", "online", ""),
            refunded: money(1_000),
            reason: "customer".into(),
            cancel_time: ts(T0 + 2 * DAY + 3_600),
        },
    );
    paid(&logs, "o-s7", "s7", T0 + DAY);
    paid(&logs, "o-s8", "s8", T0 + 12 * DAY);
    paid(&logs, "o-k1", "k1", T0 + 5 * DAY);
    paid(&logs, "o-l1", "l1", T0 + 4 * DAY);
    paid(&logs, "o-l3", "l3", T0 + 4 * DAY);
    paid(&logs, "o-l9", "l9", T0 + 6 * DAY);
    paid(&logs, "o-k3", "k3", at + WINDOW + 5 * DAY);
    logs
}

async fn stickiness(app: &TestApp) -> pb::Stickiness {
    app.kpis
        .clone()
        .get_stickiness(reader(pb::GetStickinessRequest {
            period: period(T0, T0 + 10 * DAY),
            window_days: 90,
        }))
        .await
        .unwrap()
        .into_inner()
}

fn counts(w: Option<pb::WinBackRate>) -> (i64, i64, f64) {
    let w = w.unwrap();
    (w.members, w.bought_again, w.rate)
}

fn assert_by_hand(s: &pb::Stickiness) {
    assert_eq!(counts(s.wake_up), (6, 2, 2.0 / 6.0));
    assert_eq!(counts(s.wake_up_control), (2, 1, 0.5));
    assert_eq!(counts(s.reactivation), (3, 2, 2.0 / 3.0));
    assert_eq!(counts(s.reactivation_control), (1, 0, 0.0));
}

#[tokio::test]
async fn wake_up_and_reactivation_rates_by_hand_count_each_decision_once_and_rebuild_alike() {
    let logs = campaign_history();
    let database = TestDatabase::new().await.unwrap();
    let sources = [
        ("membership", logs.serve("membership").await),
        ("orders", logs.serve("orders").await),
    ];
    let app = start(&database, &sources, |_| {}).await;
    app.caught_up(&[("membership", logs.len("membership")), ("orders", logs.len("orders"))])
        .await;
    let s = stickiness(&app).await;
    assert_by_hand(&s);
    let contacts = retail_analytics::store::scalar(&app.app.db, "SELECT COUNT(*) FROM campaign_contacts", vec![])
        .await
        .unwrap();
    assert_eq!(contacts, 16, "one row per campaign and member");
    let name = retail_analytics::store::rows(
        &app.app.db,
        "SELECT display_name, state FROM campaigns WHERE campaign_id = 'c1'",
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(
        (
            retail_analytics::store::text(&name[0], 0).unwrap(),
            retail_analytics::store::text(&name[0], 1).unwrap()
        ),
        ("We miss you".to_owned(), "running".to_owned())
    );

    // The same decisions imported again (a backfill that overlaps the log) count once.
    let again: Vec<ev::EventEnvelope> = logs.logs.lock().unwrap()["membership"]
        .iter()
        .filter(|e| e.r#type == "retail.events.v1.CampaignMemberDecided")
        .enumerate()
        .map(|(i, e)| ev::EventEnvelope {
            position: i as u64 + 1,
            source: "import".into(),
            ..e.clone()
        })
        .collect();
    let imported = app
        .admin
        .clone()
        .import_events(admin(pb::ImportEventsRequest { events: again }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(imported.applied, 17);
    assert_by_hand(&stickiness(&app).await);

    // A restart follows on from the stored positions: nothing applies twice.
    app.task.abort();
    let _ = app.task.await;
    let app = start(&database, &sources, |_| {}).await;
    app.caught_up(&[("membership", logs.len("membership")), ("orders", logs.len("orders"))])
        .await;
    assert_by_hand(&stickiness(&app).await);

    // The rebuild from the archive reproduces the projection.
    let before = dump(&app.app.db).await;
    assert_eq!(before["campaign_contacts"].len(), 16);
    retail_analytics::store::exec(&app.app.db, "DELETE FROM campaign_contacts", vec![])
        .await
        .unwrap();
    app.app.rebuild().await.unwrap();
    assert_eq!(dump(&app.app.db).await, before);
    assert_by_hand(&stickiness(&app).await);
}
