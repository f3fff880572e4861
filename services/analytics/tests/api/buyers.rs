//! Distinct customers come from the buyers bitmaps (the paying members of each
//! hour and day): they must equal a count over the purchases themselves, for any
//! hour-aligned period and dimension, and follow merges.

use std::collections::BTreeSet;

use helpers::*;
use retail_proto::analytics as pb;
use retail_proto::events as ev;
use retail_testkit::TestDatabase;

use crate::{T0, helpers};

const HOUR: i64 = 3_600;

/// A purchase: member ("" for a guest), channel, store, paid at.
type Sale = (String, &'static str, &'static str, i64);

/// 600 payments over 20 days at uneven times: 70 members and guests, two
/// channels, three stores.
fn sales() -> Vec<Sale> {
    let mut state: u64 = 0x5eed;
    let mut next = |n: u64| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % n
    };
    (0..600)
        .map(|_| {
            let member = match next(80) {
                m @ 0..70 => format!("m{m}"),
                _ => String::new(),
            };
            let channel = ["store", "online"][next(2) as usize];
            let store = if channel == "store" {
                ["S1", "S2", "S3"][next(3) as usize]
            } else {
                ""
            };
            (member, channel, store, T0 + next(20 * 86_400) as i64)
        })
        .collect()
}

/// The distinct members of `sales` paid in [start, end) under a dimension value.
fn expected(sales: &[Sale], start: i64, end: i64, dim: &str, key: &str) -> i64 {
    sales
        .iter()
        .filter(|(member, channel, store, at)| {
            !member.is_empty()
                && (start..end).contains(at)
                && match dim {
                    "all" => true,
                    "channel" => *channel == key,
                    "store" => *store == key,
                    _ => false,
                }
        })
        .map(|s| s.0.as_str())
        .collect::<BTreeSet<_>>()
        .len() as i64
}

async fn customers(app: &TestApp, start: i64, end: i64, dim: &str, key: &str) -> (i64, i64) {
    let report = app
        .kpis
        .clone()
        .get_sales_report(reader(pb::GetSalesReportRequest {
            period: period(start, end),
            dimension: dim.into(),
            dimension_value: key.into(),
        }))
        .await
        .unwrap()
        .into_inner();
    (report.current.unwrap().customers, report.previous.unwrap().customers)
}

/// Periods starting and ending inside days, whole days, a single hour, one
/// longer than the data; each with the period of the same length before it.
fn periods() -> Vec<(i64, i64)> {
    vec![
        (T0 + 5 * HOUR, T0 + 3 * 86_400 + 7 * HOUR),
        (T0 + 86_400, T0 + 11 * 86_400),
        (T0 + 10 * 86_400 + 13 * HOUR, T0 + 10 * 86_400 + 14 * HOUR),
        (T0 + 12 * 86_400 + 23 * HOUR, T0 + 19 * 86_400 + HOUR),
        (T0 - 3 * 86_400, T0 + 30 * 86_400),
    ]
}

async fn check_all(app: &TestApp, sales: &[Sale]) {
    for (start, end) in periods() {
        let before = start - (end - start);
        for (dim, key) in [
            ("all", ""),
            ("channel", "store"),
            ("channel", "online"),
            ("store", "S2"),
            ("store", "S9"),
        ] {
            let got = customers(app, start, end, dim, key).await;
            let want = (
                expected(sales, start, end, dim, key),
                expected(sales, before, start, dim, key),
            );
            assert_eq!(got, want, "[{start}, {end}) {dim}={key}");
        }
    }
}

#[tokio::test]
async fn distinct_customers_equal_a_count_over_the_purchases_also_after_merges() {
    let logs = FakeLogs {
        batch: 37,
        ..Default::default()
    };
    let mut sales = sales();
    for (i, (member, channel, store, at)) in sales.iter().enumerate() {
        logs.push(
            "orders",
            member,
            *at,
            &ev::OrderPaid {
                order_id: format!("o{i}"),
                parties: parties(member, channel, store),
                lines: vec![line("SKU-1", 1, 1_000)],
                amount: money(1_000),
                pay_time: ts(*at),
            },
        );
    }
    let database = TestDatabase::new().await.unwrap();
    let orders = logs.serve("orders").await;
    let app = start(&database, &[("orders", orders)], |_| {}).await;
    app.caught_up(&[("orders", logs.len("orders"))]).await;
    check_all(&app, &sales).await;
    app.task.abort();

    // m1 merged into m2 and m3 into m4, then m4 into m5: m1's purchases are m2's,
    // m3's and m4's m5's.
    for (id, merged, survivor) in [("g1", "m1", "m2"), ("g2", "m3", "m4"), ("g3", "m4", "m5")] {
        logs.push(
            "membership",
            survivor,
            T0 + 25 * 86_400,
            &ev::MembersMerged {
                merge_id: id.into(),
                survivor_id: survivor.into(),
                merged_id: merged.into(),
                points_transferred: 0,
                merge_time: ts(T0 + 25 * 86_400),
            },
        );
    }
    for sale in &mut sales {
        sale.0 = match sale.0.as_str() {
            "m1" => "m2".into(),
            "m3" | "m4" => "m5".into(),
            other => other.into(),
        };
    }
    let sources = [
        ("orders", logs.serve("orders").await),
        ("membership", logs.serve("membership").await),
    ];
    let app = start(&database, &sources, |_| {}).await;
    app.caught_up(&[("orders", logs.len("orders")), ("membership", logs.len("membership"))])
        .await;
    check_all(&app, &sales).await;

    // A rebuild from the archive gives the same members in every bitmap.
    let before = dump(&app.app.db).await;
    app.app.rebuild().await.unwrap();
    assert_eq!(dump(&app.app.db).await, before);
    check_all(&app, &sales).await;
    app.task.abort();
}
