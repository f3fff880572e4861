//! Analytics' API tests: consumers with exactly-once projections (against an
//! undisturbed run, with the process stopped and restarted mid-stream), the
//! rebuild from the archive, KPI answers by hand, touchpoint ingestion, the
//! dashboard over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

mod access;
mod buyers;
mod campaigns;
mod dashboard;
mod helpers;
mod kpis;
mod merges;
mod partners;
mod scores;
mod touchpoints;

use std::time::Duration;

use helpers::*;
use retail_proto::events as ev;
use retail_testkit::TestDatabase;

/// A reference time: 2026-06-01 00:00 UTC.
pub const T0: i64 = 1_780_272_000;

/// Two years of a small shop: members, products and stock, and 240 orders with
/// refunds, cancellations and ratings across channels and stores.
pub fn history() -> FakeLogs {
    let logs = FakeLogs {
        batch: 7,
        pause_ms: 10,
        ..Default::default()
    };
    let regions = ["DE-BE", "FR-IDF", "NL-NH"];
    for i in 1..=20 {
        let id = format!("m{i:02}");
        logs.push(
            "membership",
            &id,
            T0 - 800 * DAY + i * DAY,
            &ev::MemberRegistered {
                member_id: id.clone(),
                region: regions[(i % 3) as usize].into(),
                register_time: ts(T0 - 800 * DAY + i * DAY),
            },
        );
        if i <= 5 {
            logs.push(
                "membership",
                &id,
                T0 - 790 * DAY,
                &ev::TierChanged {
                    member_id: id.clone(),
                    from_tier: "basic".into(),
                    to_tier: "gold".into(),
                    reason: "purchase".into(),
                },
            );
        }
        if i % 2 == 0 {
            logs.push(
                "membership",
                &id,
                T0 - 780 * DAY,
                &ev::ConsentChanged {
                    member_id: id.clone(),
                    channel: "email".into(),
                    granted: true,
                },
            );
        }
    }
    // A win-back campaign's decisions, decided twice for m03 (a republished event),
    // and a merge.
    logs.push(
        "membership",
        "c1",
        T0 - 400 * DAY,
        &ev::CampaignChanged {
            campaign_id: "c1".into(),
            display_name: "Come back".into(),
            state: "running".into(),
            segment_id: "s1".into(),
            channel: "email".into(),
            change_time: ts(T0 - 400 * DAY),
        },
    );
    for (i, member) in ["m02", "m03", "m04", "m03", "m05"].iter().enumerate() {
        let outcome = if i == 2 { "control" } else { "contacted" };
        logs.push(
            "membership",
            member,
            T0 - 400 * DAY,
            &ev::CampaignMemberDecided {
                campaign_id: "c1".into(),
                member_id: (*member).into(),
                channel: "email".into(),
                outcome: outcome.into(),
                control: outcome == "control",
                lifecycle_state: if i % 2 == 0 { "sleeping" } else { "lost" }.into(),
                decide_time: ts(T0 - 400 * DAY),
                attribution_end_time: ts(T0 - 386 * DAY),
            },
        );
    }
    logs.push(
        "membership",
        "m06",
        T0 - 300 * DAY,
        &ev::MembersMerged {
            merge_id: "g1".into(),
            survivor_id: "m06".into(),
            merged_id: "m07".into(),
            points_transferred: 0,
            merge_time: ts(T0 - 300 * DAY),
        },
    );
    for (product, category, skus) in [("p1", "shoes", vec!["S1", "S2"]), ("p2", "bags", vec!["B1"])] {
        logs.push(
            "catalog",
            product,
            T0 - 900 * DAY,
            &ev::ProductCreated {
                product_id: product.into(),
                category: category.into(),
                title: product.into(),
                sku_codes: skus.iter().map(|s| (*s).to_owned()).collect(),
                role: String::new(),
            },
        );
    }
    for (sku, sellable, listed) in [("S1", 0, true), ("S2", 5, true), ("B1", 3, false)] {
        logs.push(
            "catalog",
            sku,
            T0 - 900 * DAY,
            &ev::StockChanged {
                sku_code: sku.into(),
                warehouse_code: "W1".into(),
                kind: "receipt".into(),
                total: sellable,
                sellable,
                reserved: 0,
                unsellable: 0,
            },
        );
        logs.push(
            "catalog",
            sku,
            T0 - 900 * DAY,
            &ev::ListingChanged {
                sku_code: sku.into(),
                channel: "online".into(),
                listed,
            },
        );
    }
    let channels = ["store", "online", "partner"];
    for i in 0..240i64 {
        let member = if i % 7 == 6 {
            String::new()
        } else {
            format!("m{:02}", i % 20 + 1)
        };
        let channel = channels[(i % 3) as usize];
        let store = if channel == "store" {
            ["BER", "HAM"][(i % 2) as usize]
        } else {
            ""
        };
        let order = format!("o{i:03}");
        let at = T0 - 730 * DAY + i * 3 * DAY + (i % 5) * 3_600;
        let mut lines = vec![line("S1", 1, 2_500)];
        if i % 2 == 0 {
            lines.push(line("B1", 2, 1_000));
        }
        let amount: i64 = lines
            .iter()
            .map(|l| l.quantity * l.unit_price.as_ref().unwrap().amount_minor)
            .sum();
        let who = parties(&member, channel, store);
        logs.push(
            "orders",
            &member,
            at,
            &ev::OrderPaid {
                order_id: order.clone(),
                parties: who.clone(),
                lines: lines.clone(),
                amount: money(amount),
                pay_time: ts(at),
            },
        );
        if i % 10 == 3 {
            logs.push(
                "orders",
                &member,
                at + 5 * DAY,
                &ev::OrderRefunded {
                    order_id: order.clone(),
                    return_id: format!("r{i}"),
                    parties: who.clone(),
                    lines: vec![line("S1", 1, 2_500)],
                    amount: money(2_500),
                    refund_time: ts(at + 5 * DAY),
                },
            );
        }
        if i % 15 == 4 {
            logs.push(
                "orders",
                &member,
                at + DAY,
                &ev::OrderCancelled {
                    order_id: order.clone(),
                    parties: who.clone(),
                    refunded: money(amount),
                    reason: "changed my mind".into(),
                    cancel_time: ts(at + DAY),
                },
            );
        }
        if i % 4 == 0 {
            logs.push(
                "orders",
                &member,
                at + 2 * DAY,
                &ev::OrderRated {
                    order_id: order.clone(),
                    parties: who,
                    satisfaction: (i % 5 + 1) as i32,
                    recommend: (i % 11) as i32,
                },
            );
        }
    }
    logs
}

/// Applies `logs` to a fresh database: membership and catalog first (so every
/// order meets its member's region and tier), then orders, stopping and
/// restarting analytics `restarts` times at random moments while orders stream.
async fn run(
    logs: &FakeLogs,
    restarts: usize,
) -> (TestDatabase, std::collections::BTreeMap<String, Vec<String>>, Vec<u64>) {
    let database = TestDatabase::new().await.unwrap();
    let membership = logs.serve("membership").await;
    let catalog = logs.serve("catalog").await;
    let orders = logs.serve("orders").await;
    let first = start(&database, &[("membership", membership), ("catalog", catalog)], |_| {}).await;
    first
        .caught_up(&[("membership", logs.len("membership")), ("catalog", logs.len("catalog"))])
        .await;
    first.task.abort();
    drop(first);
    let all = [("membership", membership), ("catalog", catalog), ("orders", orders)];
    let mut stopped_at = Vec::new();
    for i in 0..restarts {
        let app = start(&database, &all, |_| {}).await;
        // Stopped at a growing share of the log, a few milliseconds after it was
        // reached: between batches, inside a transaction, before a commit.
        let target = logs.len("orders") * (i as u64 + 1) / (restarts as u64 + 2);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            let positions = app.app.freshness().await.unwrap();
            if positions.iter().any(|p| p.source == "orders" && p.position >= target) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis((i as u64 * 7) % 11)).await;
        app.task.abort();
        let _ = app.task.await;
        let positions = app.app.freshness().await.unwrap();
        stopped_at.extend(positions.iter().filter(|p| p.source == "orders").map(|p| p.position));
    }
    let last = start(&database, &all, |_| {}).await;
    last.caught_up(&[("orders", logs.len("orders"))]).await;
    let dump = dump(&last.app.db).await;
    last.task.abort();
    (database, dump, stopped_at)
}

#[tokio::test]
async fn projections_after_restarts_equal_those_of_an_undisturbed_run() {
    let logs = history();
    let (_a, undisturbed, _) = run(&logs, 0).await;
    let (_b, disturbed, stopped_at) = run(&logs, 6).await;
    // The restarts fell inside the orders log, not all before or after it.
    let end = logs.len("orders");
    assert!(
        stopped_at.iter().filter(|p| **p > 0 && **p < end).count() >= 2,
        "stopped at {stopped_at:?} of {end}"
    );
    assert_eq!(
        undisturbed["event_archive"].len() as u64,
        logs.len("orders") + logs.len("membership") + logs.len("catalog")
    );
    assert!(undisturbed["rollups"].len() > 1_000, "the history fills the rollups");
    assert_eq!(
        undisturbed["campaign_contacts"].len(),
        4,
        "one row per campaign and member"
    );
    assert_eq!(undisturbed["member_merges"].len(), 1);
    for (table, rows) in &undisturbed {
        assert_eq!(rows, &disturbed[table], "table {table} differs after restarts");
    }
}

#[tokio::test]
async fn a_rebuild_from_the_archive_reproduces_the_projections_and_swaps_them_in() {
    let logs = history();
    let database = TestDatabase::new().await.unwrap();
    let all = [
        ("membership", logs.serve("membership").await),
        ("catalog", logs.serve("catalog").await),
    ];
    let app = start(&database, &all, |_| {}).await;
    app.caught_up(&[("membership", logs.len("membership")), ("catalog", logs.len("catalog"))])
        .await;
    app.task.abort();
    let orders = logs.serve("orders").await;
    let app = start(&database, &[all[0], all[1], ("orders", orders)], |_| {}).await;
    app.caught_up(&[("orders", logs.len("orders"))]).await;
    let before = dump(&app.app.db).await;
    // A projection damaged by a bug: the rebuild recomputes it from the archive.
    retail_analytics::store::exec(&app.app.db, "UPDATE rollups SET value = value + 1", vec![])
        .await
        .unwrap();
    let mut admin_client = app.admin.clone();
    let replayed = admin_client
        .rebuild_projections(admin(retail_proto::analytics::RebuildProjectionsRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        replayed.events_replayed as u64,
        logs.len("orders") + logs.len("membership") + logs.len("catalog")
    );
    assert_eq!(dump(&app.app.db).await, before);
    // A second rebuild works on the swapped-in tables.
    app.app.rebuild().await.unwrap();
    assert_eq!(dump(&app.app.db).await, before);
    // Only admins rebuild.
    let denied = admin_client
        .rebuild_projections(reader(retail_proto::analytics::RebuildProjectionsRequest {}))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
}

#[tokio::test]
async fn a_batch_applied_at_once_equals_its_events_applied_one_by_one() {
    let mut logs = history();
    logs.pause_ms = 0;
    // Batches of a whole log (members, payments, refunds and ratings of the same
    // orders and members inside one batch) against one event per transaction.
    logs.batch = 10_000;
    let (_a, batched, _) = run(&logs, 0).await;
    logs.batch = 1;
    let (_b, one_by_one, _) = run(&logs, 0).await;
    assert!(batched["purchases"].len() > 10, "the history has purchases");
    for (table, rows) in &one_by_one {
        assert_eq!(rows, &batched[table], "table {table} differs with whole-log batches");
    }
}
