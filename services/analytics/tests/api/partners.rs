//! Channel-partner's log: target attainment, projection and ranking of partners
//! and reps, lead conversion and pipeline conversion, each against figures
//! computed by hand; and its projections exactly once across restarts and a
//! rebuild.

use std::time::Duration;

use retail_proto::analytics as pb;
use retail_proto::events as ev;
use retail_testkit::TestDatabase;

use crate::helpers::*;

/// 2026-11-01 00:00 UTC; the month runs 30 days to 2026-12-01.
const NOV: i64 = 1_793_491_200;
const DEC: i64 = 1_796_083_200;
const OCT: i64 = 1_790_812_800;
/// Ten days into November.
const AS_OF: i64 = NOV + 10 * DAY;

fn paid(logs: &FakeLogs, order: &str, partner: &str, rep: &str, at: i64, amount: i64) {
    logs.push(
        "orders",
        order,
        at,
        &ev::OrderPaid {
            order_id: order.into(),
            parties: Some(ev::OrderParties {
                channel: "partner".into(),
                partner_id: partner.into(),
                sales_rep: rep.into(),
                ..Default::default()
            }),
            lines: vec![line("SKU-1", 1, amount)],
            amount: money(amount),
            pay_time: ts(at),
        },
    );
}

fn target(logs: &FakeLogs, id: &str, kind: &str, partner: &str, rep: &str, amount: i64) {
    logs.push(
        "partner",
        partner,
        NOV - DAY,
        &ev::TargetSet {
            target_id: id.into(),
            subject_kind: kind.into(),
            partner_id: partner.into(),
            sales_rep_id: rep.into(),
            period_kind: "month".into(),
            period_start_time: ts(NOV),
            period_end_time: ts(DEC),
            amount_minor: amount,
        },
    );
}

fn lead(logs: &FakeLogs, lead: &str, partner: &str, change: &str, at: i64) {
    logs.push(
        "partner",
        partner,
        at,
        &ev::LeadChanged {
            lead: format!("leads/{lead}"),
            partner_id: partner.into(),
            change: change.into(),
            change_time: ts(at),
            ..Default::default()
        },
    );
}

fn stage(logs: &FakeLogs, opportunity: &str, partner: &str, from: &str, to: &str, at: i64) {
    logs.push(
        "partner",
        partner,
        at,
        &ev::OpportunityStageChanged {
            opportunity: format!("partners/{partner}/opportunities/{opportunity}"),
            partner_id: partner.into(),
            from_stage: from.into(),
            to_stage: to.into(),
            change_time: ts(at),
            ..Default::default()
        },
    );
}

/// The logs of the by-hand test.
fn partner_logs() -> FakeLogs {
    let logs = FakeLogs {
        batch: 5,
        pause_ms: 5,
        ..Default::default()
    };
    // Partner targets for November: p1 1,000.00, p2 500.00, p3 2,000.00.
    target(&logs, "t-p1", "partner", "p1", "", 100_000);
    target(&logs, "t-p2", "partner", "p2", "", 50_000);
    target(&logs, "t-p3", "partner", "p3", "", 200_000);
    // Rep targets: r1 and r2 of p1.
    target(&logs, "t-r1", "rep", "p1", "r1", 50_000);
    target(&logs, "t-r2", "rep", "p1", "r2", 10_000);
    logs.push(
        "partner",
        "p1",
        NOV - DAY,
        &ev::PartnerLevelChanged {
            partner_id: "p1".into(),
            from_level: "registered".into(),
            to_level: "gold".into(),
            reason: "sales".into(),
            trailing_sales_minor: 0,
        },
    );
    // p1: 300.00 (r1) + 400.00 (r2) - 100.00 refunded = 600.00.
    paid(&logs, "o1", "p1", "r1", NOV + DAY + 10 * 3_600, 30_000);
    paid(&logs, "o2", "p1", "r2", NOV + 4 * DAY, 40_000);
    logs.push(
        "orders",
        "o2",
        NOV + 5 * DAY,
        &ev::OrderRefunded {
            order_id: "o2".into(),
            return_id: "ret1".into(),
            parties: None,
            lines: vec![line("SKU-1", 1, 10_000)],
            amount: money(10_000),
            refund_time: ts(NOV + 5 * DAY),
        },
    );
    // Outside the period so far: October, and after as_of.
    paid(&logs, "o3", "p1", "r1", OCT + 3 * DAY, 77_000);
    paid(&logs, "o4", "p1", "r1", AS_OF + DAY, 99_999);
    // p2: 400.00; p3: 200.00.
    paid(&logs, "o5", "p2", "", NOV + 2 * DAY, 40_000);
    paid(&logs, "o6", "p3", "", NOV + 3 * DAY, 20_000);
    logs.push(
        "partner",
        "p1",
        NOV + 4 * DAY,
        &ev::TargetAttained {
            target_id: "t-r2".into(),
            partner_id: "p1".into(),
            sales_rep_id: "r2".into(),
            progress_minor: 40_000,
            amount_minor: 10_000,
        },
    );
    // Leads: L1 declined by p1, won by p2; L2 timed out at p1, lost by p2; L3
    // accepted by p1; L4 found no partner.
    let at = |d: i64| NOV + d * DAY;
    lead(&logs, "L1", "p1", "offered", at(1));
    lead(&logs, "L1", "p1", "declined", at(2));
    lead(&logs, "L1", "p2", "offered", at(2));
    lead(&logs, "L1", "p2", "accepted", at(3));
    lead(&logs, "L1", "p2", "won", at(8));
    lead(&logs, "L2", "p1", "offered", at(1));
    lead(&logs, "L2", "p1", "timed_out", at(4));
    lead(&logs, "L2", "p2", "offered", at(4));
    lead(&logs, "L2", "p2", "accepted", at(5));
    lead(&logs, "L2", "p2", "lost", at(9));
    lead(&logs, "L3", "p1", "offered", at(2));
    lead(&logs, "L3", "p1", "accepted", at(2));
    lead(&logs, "L4", "", "unassigned", at(3));
    // Outside the period.
    lead(&logs, "L5", "p1", "offered", at(12));
    // Opportunities: O1 and O2 of p1, O3 and O4 of p2.
    stage(&logs, "O1", "p1", "", "identified", at(0));
    stage(&logs, "O1", "p1", "identified", "proposed", at(2));
    stage(&logs, "O1", "p1", "proposed", "confirmed", at(4));
    stage(&logs, "O1", "p1", "confirmed", "lost", at(5));
    stage(&logs, "O2", "p1", "", "identified", at(1));
    stage(&logs, "O2", "p1", "identified", "proposed", at(3));
    stage(&logs, "O2", "p1", "proposed", "confirmed", at(7));
    stage(&logs, "O2", "p1", "confirmed", "understood", at(8));
    stage(&logs, "O2", "p1", "understood", "negotiating", at(9));
    stage(&logs, "O2", "p1", "negotiating", "won", at(11));
    stage(&logs, "O3", "p2", "", "identified", at(2));
    stage(&logs, "O3", "p2", "identified", "lost", at(3));
    stage(&logs, "O4", "p2", "", "identified", OCT + 29 * DAY);
    stage(&logs, "O4", "p2", "identified", "proposed", at(1));
    logs
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[tokio::test]
async fn attainment_projection_ranking_leads_and_pipeline_by_hand() {
    let logs = partner_logs();
    let database = TestDatabase::new().await.unwrap();
    let app = start(
        &database,
        &[
            ("orders", logs.serve("orders").await),
            ("partner", logs.serve("partner").await),
        ],
        |_| {},
    )
    .await;
    app.caught_up(&[("orders", logs.len("orders")), ("partner", logs.len("partner"))])
        .await;
    let mut kpis = app.kpis.clone();

    let partners = kpis
        .list_target_attainment(reader(pb::ListTargetAttainmentRequest {
            as_of_time: ts(AS_OF),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let got: Vec<(&str, i64, i64, i32, i32)> = partners
        .targets
        .iter()
        .map(|t| {
            (
                t.partner.as_str(),
                t.actual_minor,
                t.projected_minor,
                t.rank,
                t.peer_count,
            )
        })
        .collect();
    // 10 of 30 days elapsed: the projection is three times the actual.
    assert_eq!(
        got,
        [
            ("p2", 40_000, 120_000, 1, 3),
            ("p1", 60_000, 180_000, 2, 3),
            ("p3", 20_000, 60_000, 3, 3),
        ]
    );
    let p1 = &partners.targets[1];
    assert!(close(p1.attainment, 0.6) && close(p1.projected_attainment, 1.8));
    assert_eq!(p1.level, "gold");
    assert_eq!(p1.amount_minor, 100_000);
    assert_eq!(p1.period.as_ref().unwrap().start_time, ts(NOV));
    assert!(close(partners.targets[0].attainment, 0.8));
    assert!(close(partners.targets[2].projected_attainment, 0.3));
    assert!(
        partners
            .freshness
            .unwrap()
            .positions
            .iter()
            .any(|p| p.source == "partner")
    );

    let reps = kpis
        .list_target_attainment(reader(pb::ListTargetAttainmentRequest {
            as_of_time: ts(AS_OF),
            subject_kind: "rep".into(),
            partner: "p1".into(),
            period_kind: "month".into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .targets;
    let got: Vec<(&str, i64, i64, i32)> = reps
        .iter()
        .map(|t| (t.sales_rep.as_str(), t.actual_minor, t.projected_minor, t.rank))
        .collect();
    // r2: 400.00 - 100.00 of 100.00 = 300%; r1: 300.00 of 500.00 = 60%.
    assert_eq!(got, [("r2", 30_000, 90_000, 1), ("r1", 30_000, 90_000, 2)]);
    assert!(close(reps[0].attainment, 3.0) && close(reps[1].attainment, 0.6));
    assert_eq!(reps[0].attain_time, ts(NOV + 4 * DAY));
    assert_eq!(reps[1].attain_time, None);

    // Filtered to p3, which keeps its rank among all three.
    let only = kpis
        .list_target_attainment(reader(pb::ListTargetAttainmentRequest {
            as_of_time: ts(AS_OF),
            partner: "p3".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .targets;
    assert_eq!(only.len(), 1);
    assert_eq!((only[0].rank, only[0].peer_count), (3, 3));
    // Before the period nothing runs; at its end the projection is the actual.
    let before = kpis
        .list_target_attainment(reader(pb::ListTargetAttainmentRequest {
            as_of_time: ts(NOV - 1),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(before.targets.is_empty());

    let leads = kpis
        .get_lead_conversion(reader(pb::GetLeadConversionRequest {
            period: period(NOV, AS_OF),
            partner: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    let total = leads.total.unwrap();
    assert_eq!(
        (
            total.offered,
            total.accepted,
            total.declined,
            total.timed_out,
            total.unassigned,
            total.won,
            total.lost
        ),
        (5, 3, 1, 1, 1, 1, 1)
    );
    assert!(close(total.acceptance_rate, 0.6));
    assert!(close(total.decline_rate, 0.2) && close(total.timeout_rate, 0.2));
    assert!(close(total.win_rate, 1.0 / 3.0));
    let by: Vec<(&str, i64, i64, i64, i64)> = leads
        .partners
        .iter()
        .map(|l| (l.partner.as_str(), l.offered, l.accepted, l.won, l.lost))
        .collect();
    assert_eq!(by, [("p1", 3, 1, 0, 0), ("p2", 2, 2, 1, 1)]);
    assert!(close(leads.partners[0].acceptance_rate, 1.0 / 3.0));
    assert!(close(leads.partners[0].timeout_rate, 1.0 / 3.0));
    assert!(close(leads.partners[1].win_rate, 0.5));

    let pipeline = kpis
        .get_pipeline_conversion(reader(pb::GetPipelineConversionRequest {
            period: period(NOV, AS_OF),
            partner: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .stages;
    let got: Vec<(&str, i64, i64, i64)> = pipeline
        .iter()
        .map(|s| (s.stage.as_str(), s.reached, s.advanced, s.lost))
        .collect();
    assert_eq!(
        got,
        [
            ("identified", 3, 2, 1),
            ("proposed", 3, 2, 0),
            ("confirmed", 2, 1, 1),
            ("understood", 1, 1, 0),
            ("negotiating", 1, 0, 0),
            ("won", 0, 0, 0),
            ("lost", 2, 0, 0),
        ]
    );
    assert!(close(pipeline[0].conversion, 2.0 / 3.0) && close(pipeline[0].average_days, 2.0));
    assert!(close(pipeline[1].average_days, 3.0));
    assert!(close(pipeline[2].conversion, 0.5) && close(pipeline[2].average_days, 1.0));
    let p2 = kpis
        .get_pipeline_conversion(reader(pb::GetPipelineConversionRequest {
            period: period(NOV, AS_OF),
            partner: "p2".into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .stages;
    assert_eq!((p2[0].reached, p2[0].advanced, p2[0].lost), (1, 0, 1));
    assert_eq!((p2[1].reached, p2[1].advanced), (1, 0));

    // Bad input is refused field by field.
    let bad = kpis
        .list_target_attainment(reader(pb::ListTargetAttainmentRequest {
            subject_kind: "store".into(),
            period_kind: "week".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert_eq!(violated_fields(&bad), ["subject_kind", "period_kind"]);
    let bad = kpis
        .get_lead_conversion(reader(pb::GetLeadConversionRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad), ["period"]);
    let denied = kpis
        .get_pipeline_conversion(with_token(
            &staff_token(&["analytics.write"]),
            pb::GetPipelineConversionRequest {
                period: period(NOV, AS_OF),
                partner: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    app.task.abort();
}

/// Many partner events, in small batches.
fn partner_history() -> FakeLogs {
    let logs = FakeLogs {
        batch: 3,
        pause_ms: 5,
        ..Default::default()
    };
    for p in 0..6 {
        let partner = format!("p{p}");
        target(&logs, &format!("t{p}"), "partner", &partner, "", 10_000 * (p + 1));
        for i in 0..12 {
            let at = NOV + i * DAY + p * 3_600;
            lead(&logs, &format!("L{p}-{i}"), &partner, "offered", at);
            let change = ["accepted", "declined", "timed_out"][(i % 3) as usize];
            lead(&logs, &format!("L{p}-{i}"), &partner, change, at + 600);
            let o = format!("O{p}-{i}");
            stage(&logs, &o, &partner, "", "identified", at);
            if i % 2 == 0 {
                stage(&logs, &o, &partner, "identified", "proposed", at + DAY);
            }
            logs.push(
                "partner",
                &partner,
                at,
                &ev::PartnerPointsChanged {
                    ledger: format!("partners/{partner}/ledger"),
                    partner_id: partner.clone(),
                    kind: "earn".into(),
                    points: i + 1,
                    balance: 0,
                    debt: 0,
                    source: format!("orders/x{p}-{i}"),
                },
            );
        }
    }
    logs
}

async fn run_partner(logs: &FakeLogs, restarts: usize) -> std::collections::BTreeMap<String, Vec<String>> {
    let database = TestDatabase::new().await.unwrap();
    let source = logs.serve("partner").await;
    let end = logs.len("partner");
    for i in 0..restarts {
        let app = start(&database, &[("partner", source)], |_| {}).await;
        let target = end * (i as u64 + 1) / (restarts as u64 + 2);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            let positions = app.app.freshness().await.unwrap();
            if positions.iter().any(|p| p.source == "partner" && p.position >= target) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis((i as u64 * 5) % 7)).await;
        app.task.abort();
        let _ = app.task.await;
    }
    let last = start(&database, &[("partner", source)], |_| {}).await;
    last.caught_up(&[("partner", end)]).await;
    let before = dump(&last.app.db).await;
    // The rebuild from the archive reproduces them.
    let replayed = last.app.rebuild().await.unwrap();
    assert_eq!(replayed, end);
    assert_eq!(dump(&last.app.db).await, before);
    last.task.abort();
    before
}

#[tokio::test]
async fn partner_projections_are_exactly_once_across_restarts_and_rebuilt_alike() {
    let logs = partner_history();
    let undisturbed = run_partner(&logs, 0).await;
    let disturbed = run_partner(&logs, 4).await;
    assert_eq!(undisturbed["event_archive"].len() as u64, logs.len("partner"));
    assert_eq!(undisturbed["targets"].len(), 6);
    assert_eq!(undisturbed["opportunity_stages"].len(), 6 * 12 + 6 * 6);
    for (table, rows) in &undisturbed {
        assert_eq!(rows, &disturbed[table], "table {table} differs after restarts");
    }
}
