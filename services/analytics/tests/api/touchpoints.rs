//! Touchpoint ingestion: bad events are rejected one by one with their reason,
//! duplicates ignored, and every good event of the same batch kept; the store
//! funnel, SKU flags, staff figures and online funnel by hand.

use helpers::*;
use retail_proto::analytics as pb;
use retail_testkit::TestDatabase;

use crate::helpers;

fn tp(id: &str, kind: &str, at: i64) -> pb::Touchpoint {
    pb::Touchpoint {
        event_id: id.into(),
        kind: kind.into(),
        occur_time: ts(at),
        store: "BER".into(),
        ..Default::default()
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tokio::test]
async fn bad_touchpoints_are_rejected_one_by_one_and_good_ones_kept() {
    let database = TestDatabase::new().await.unwrap();
    let app = start(&database, &[], |_| {}).await;
    let mut touch = app.touch.clone();
    let t = now() - 60;
    let batch = vec![
        pb::Touchpoint {
            count: 100,
            ..tp("a1", "door_passed", t)
        },
        tp("a2", "teleport", t),
        pb::Touchpoint {
            count: 40,
            ..tp("a3", "door_entered", t)
        },
        // Beyond the 300 s skew allowance.
        tp("a4", "door_entered", now() + 3_600),
        pb::Touchpoint {
            count: -5,
            ..tp("a5", "door_entered", t)
        },
        // The same id again in the batch: ignored.
        pb::Touchpoint {
            count: 999,
            ..tp("a3", "door_entered", t)
        },
        // Older than the lateness window (3 days).
        tp("a6", "door_entered", now() - 4 * DAY),
        pb::Touchpoint {
            sku_code: String::new(),
            subject: "s".into(),
            ..tp("a7", "try_on", t)
        },
        pb::Touchpoint {
            count: 10,
            ..tp("a8", "door_entered", t - 3_600)
        },
    ];
    let out = touch
        .ingest_touchpoints(writer(pb::IngestTouchpointsRequest { touchpoints: batch }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((out.accepted, out.duplicates), (3, 1));
    let rejected: Vec<(i32, &str, &str)> = out
        .rejections
        .iter()
        .map(|r| (r.index, r.event_id.as_str(), r.field.as_str()))
        .collect();
    assert_eq!(
        rejected,
        vec![
            (1, "a2", "kind"),
            (3, "a4", "occur_time"),
            (4, "a5", "count"),
            (6, "a6", "occur_time"),
            (7, "a7", "sku_code"),
        ]
    );
    // A retry of the whole batch stores nothing twice.
    let again = touch
        .ingest_touchpoints(writer(pb::IngestTouchpointsRequest {
            touchpoints: vec![tp("a1", "door_passed", t), tp("a3", "door_entered", t)],
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((again.accepted, again.duplicates), (0, 2));
    let funnel = app
        .kpis
        .clone()
        .get_store_funnel(reader(pb::GetStoreFunnelRequest {
            period: period(now() - DAY, now() + DAY),
            store: "BER".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    // 100 passed by, 40 + 10 entered: none of the bad or repeated counts.
    assert_eq!((funnel.passed_by, funnel.entered), (100, 50));
    assert!((funnel.entry_rate - 0.5).abs() < 1e-9);
    let raw = retail_analytics::store::scalar(&app.app.db, "SELECT COUNT(*) FROM touchpoints", vec![])
        .await
        .unwrap();
    assert_eq!(raw, 3);
    // Too many in one message.
    let err = touch
        .ingest_touchpoints(writer(pb::IngestTouchpointsRequest {
            touchpoints: (0..1_001).map(|i| tp(&format!("x{i}"), "door_passed", t)).collect(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = touch
        .ingest_touchpoints(reader(pb::IngestTouchpointsRequest { touchpoints: vec![] }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
}

#[tokio::test]
async fn a_stream_of_batches_numbers_rejections_over_the_stream() {
    let database = TestDatabase::new().await.unwrap();
    let app = start(&database, &[], |_| {}).await;
    let t = now() - 60;
    let messages = vec![
        pb::StreamTouchpointsRequest {
            touchpoints: vec![tp("s1", "door_entered", t), tp("s2", "nope", t)],
        },
        pb::StreamTouchpointsRequest {
            touchpoints: vec![
                tp("s3", "door_entered", t),
                tp("s1", "door_entered", t),
                tp("s4", "nope", t),
            ],
        },
    ];
    let out = app
        .touch
        .clone()
        .stream_touchpoints(writer(tokio_stream::iter(messages)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((out.accepted, out.duplicates), (2, 1));
    let idx: Vec<i32> = out.rejections.iter().map(|r| r.index).collect();
    assert_eq!(idx, vec![1, 4]);
}

/// Twelve batches of one store and hour at once, more than the rollups have
/// shards, half of each batch's ids also sent by another batch: every touchpoint
/// is counted once in the funnel and in the ingested count, whichever batch won it.
#[tokio::test]
async fn concurrent_batches_of_one_store_count_each_touchpoint_once() {
    let database = TestDatabase::new().await.unwrap();
    let app = start(&database, &[], |_| {}).await;
    let t = now() - 60;
    let batches = 12;
    let mut sent = tokio::task::JoinSet::new();
    for b in 0..batches {
        let mut touch = app.touch.clone();
        // Batch b sends ids b*50 .. b*50+100: its second half is batch b+1's first.
        let mut touchpoints: Vec<pb::Touchpoint> = (b * 50..b * 50 + 100)
            .map(|i| pb::Touchpoint {
                count: 1 + i % 3,
                ..tp(&format!("c{i}"), "door_entered", t)
            })
            .collect();
        // Try-ons of 37 shoppers, each in several batches and in two hours of
        // the period (the same shopper counts once), and a 38th who tried the
        // same SKU on the day before the period and again in it (counted: a
        // trier of the period, though not a first try).
        touchpoints.extend((b * 10..b * 10 + 20).map(|i| pb::Touchpoint {
            sku_code: format!("K{}", i % 4),
            subject: format!("p{}", i % 37),
            ..tp(&format!("t{i}"), "try_on", t - (i % 2) * 5 * 3_600)
        }));
        if b == 0 {
            for (id, at) in [("t-early", now() - DAY - 7_200), ("t-again", t)] {
                touchpoints.push(pb::Touchpoint {
                    sku_code: "K9".into(),
                    subject: "early".into(),
                    ..tp(id, "try_on", at)
                });
            }
        }
        sent.spawn(async move {
            touch
                .ingest_touchpoints(writer(pb::IngestTouchpointsRequest { touchpoints }))
                .await
                .map(|r| r.into_inner())
        });
    }
    let (mut accepted, mut duplicates) = (0, 0);
    while let Some(out) = sent.join_next().await {
        let out = out.unwrap().unwrap();
        accepted += out.accepted;
        duplicates += out.duplicates;
    }
    let distinct = batches * 50 + 50;
    let try_ons = batches * 10 + 10 + 2;
    assert_eq!(accepted as i64, distinct + try_ons);
    assert_eq!(duplicates as i64, batches * 120 + 2 - distinct - try_ons);
    let entered: i64 = (0..distinct).map(|i| 1 + i % 3).sum();
    let funnel = app
        .kpis
        .clone()
        .get_store_funnel(reader(pb::GetStoreFunnelRequest {
            period: period(now() - DAY, now() + 60),
            store: "BER".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(funnel.entered, entered);
    assert!((funnel.try_on_rate - 38.0 / entered as f64).abs() < 1e-12);
    let positions = app.app.freshness().await.unwrap();
    let ingested = positions.iter().find(|p| p.source == "touchpoints").unwrap();
    assert_eq!(ingested.position as i64, distinct + try_ons);
}

/// The triers bitmaps filled from the raw try-ons (what the migration that
/// creates them does) give the store funnel the same distinct triers as the
/// bitmaps written by ingestion.
#[tokio::test]
async fn triers_backfilled_from_raw_try_ons_equal_the_ingested_ones() {
    let database = TestDatabase::new().await.unwrap();
    let app = start(&database, &[], |_| {}).await;
    let t = now() - 60;
    let mut touchpoints = vec![pb::Touchpoint {
        count: 40,
        ..tp("e1", "door_entered", t)
    }];
    // 9 shoppers over three hours, some trying twice; one in another store.
    touchpoints.extend((0..15).map(|i| pb::Touchpoint {
        sku_code: format!("K{}", i % 2),
        subject: format!("s{}", i % 9),
        ..tp(&format!("b{i}"), "try_on", t - (i % 3) * 3_600)
    }));
    touchpoints.push(pb::Touchpoint {
        store: "HAM".into(),
        sku_code: "K1".into(),
        subject: "elsewhere".into(),
        ..tp("b-ham", "try_on", t)
    });
    app.touch
        .clone()
        .ingest_touchpoints(writer(pb::IngestTouchpointsRequest { touchpoints }))
        .await
        .unwrap();
    let rate = || async {
        app.kpis
            .clone()
            .get_store_funnel(reader(pb::GetStoreFunnelRequest {
                period: period(now() - DAY, now() + 60),
                store: "BER".into(),
            }))
            .await
            .unwrap()
            .into_inner()
            .try_on_rate
    };
    assert!((rate().await - 9.0 / 40.0).abs() < 1e-12);
    let db = &app.app.db;
    retail_analytics::store::exec(db, "DELETE FROM triers", vec![])
        .await
        .unwrap();
    retail_analytics::store::exec(db, "DELETE FROM shopper_numbers", vec![])
        .await
        .unwrap();
    assert_eq!(rate().await, 0.0);
    retail_analytics::store::triers::backfill(db).await.unwrap();
    assert!((rate().await - 9.0 / 40.0).abs() < 1e-12);
}

#[tokio::test]
async fn store_funnel_flags_staff_and_online_funnel_by_hand() {
    let database = TestDatabase::new().await.unwrap();
    let app = start(&database, &[], |_| {}).await;
    let t = now() - 3_600;
    let mut events = vec![
        pb::Touchpoint {
            count: 200,
            ..tp("d1", "door_passed", t)
        },
        pb::Touchpoint {
            count: 100,
            ..tp("d2", "door_entered", t)
        },
        pb::Touchpoint {
            place: "A1".into(),
            count: 80,
            ..tp("d3", "aisle_surveyed", t)
        },
        pb::Touchpoint {
            place: "A1".into(),
            count: 20,
            ..tp("d4", "aisle_passed", t)
        },
        pb::Touchpoint {
            place: "1".into(),
            count: 50,
            ..tp("d5", "floor_entered", t)
        },
        pb::Touchpoint {
            place: "1".into(),
            count: 10,
            ..tp("d6", "floor_went_up", t)
        },
        pb::Touchpoint {
            place: "Z1".into(),
            count: 40,
            ..tp("d7", "zone_passed", t)
        },
        pb::Touchpoint {
            place: "Z1".into(),
            count: 10,
            seconds: 600,
            ..tp("d8", "zone_stayed", t)
        },
        pb::Touchpoint {
            staff_id: "e1".into(),
            count: 4_000,
            ..tp("d9", "staff_steps", t)
        },
        pb::Touchpoint {
            staff_id: "e1".into(),
            count: 8,
            ..tp("d10", "staff_served", t)
        },
    ];
    // SKU X: 20 shoppers try it on, 1 buys it after; SKU Y..: 2 triers each, both buy.
    for i in 0..20 {
        events.push(pb::Touchpoint {
            sku_code: "X".into(),
            subject: format!("shopper-{i}"),
            ..tp(&format!("tx{i}"), "try_on", t)
        });
    }
    for sku in ["Y1", "Y2", "Y3", "Y4", "Y5", "Y6", "Y7", "Y8", "Y9"] {
        for i in 0..2 {
            let subject = format!("{sku}-shopper-{i}");
            events.push(pb::Touchpoint {
                sku_code: sku.into(),
                subject: subject.clone(),
                ..tp(&format!("t{sku}{i}"), "try_on", t)
            });
            events.push(pb::Touchpoint {
                subject,
                sku_codes: vec![sku.into()],
                amount_minor: 1_000,
                seconds: 120,
                reception_seconds: 300,
                ..tp(&format!("r{sku}{i}"), "pos_receipt", t + 60)
            });
        }
    }
    events.push(pb::Touchpoint {
        subject: "shopper-0".into(),
        sku_codes: vec!["X".into()],
        amount_minor: 5_000,
        seconds: 60,
        reception_seconds: 0,
        staff_id: "e1".into(),
        place: "Z1".into(),
        ..tp("rx", "pos_receipt", t + 60)
    });
    // Online: 1000 reached, 4 visits (one bounce, depths 1 3 4 4), 2 carts, 1 inquiry.
    events.push(pb::Touchpoint {
        count: 1_000,
        store: String::new(),
        ..tp("o1", "online_reach", t)
    });
    for (i, depth) in [1, 3, 4, 4].into_iter().enumerate() {
        events.push(pb::Touchpoint {
            subject: format!("sess-{i}"),
            count: depth,
            home_page: i == 0,
            store: String::new(),
            ..tp(&format!("ov{i}"), "online_visit", t)
        });
    }
    for i in 0..2 {
        events.push(pb::Touchpoint {
            sku_code: "X".into(),
            store: String::new(),
            ..tp(&format!("oc{i}"), "online_add_to_cart", t)
        });
    }
    events.push(pb::Touchpoint {
        store: String::new(),
        ..tp("oi", "online_inquiry", t)
    });
    let out = app
        .touch
        .clone()
        .ingest_touchpoints(writer(pb::IngestTouchpointsRequest {
            touchpoints: events.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(out.rejections.is_empty(), "{:?}", out.rejections);
    assert_eq!(out.accepted as usize, events.len());
    let mut kpis = app.kpis.clone();
    let p = period(now() - DAY, now() + DAY);
    let f = kpis
        .get_store_funnel(reader(pb::GetStoreFunnelRequest {
            period: p,
            store: "BER".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!((f.entry_rate - 0.5).abs() < 1e-9);
    assert_eq!((f.pass_through[0].place.as_str(), f.pass_through[0].rate), ("A1", 0.25));
    assert_eq!(f.upstairs[0].rate, 0.2);
    assert_eq!(f.dwell[0].rate, 0.25);
    // 1 purchaser of the 10 who stayed in Z1.
    assert_eq!(f.purchase[0].rate, 0.1);
    // 20 + 18 distinct triers of 100 entered.
    assert!((f.try_on_rate - 0.38).abs() < 1e-9);
    // 19 receipts: 18 x 120 s + 60 s.
    assert_eq!(f.receipts, 19);
    assert!((f.average_transaction_seconds - (18.0 * 120.0 + 60.0) / 19.0).abs() < 1e-9);
    assert!((f.average_reception_seconds - 18.0 * 300.0 / 19.0).abs() < 1e-9);

    // Flags: X has the top try-on rate (20/100) and converts 1/20 = 0.05, below half
    // the average of (0.05 + 9 x 1.0) / 10 = 0.905.
    let flags = kpis
        .list_sku_flags(reader(pb::ListSkuFlagsRequest {
            period: p,
            store: "BER".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let x = flags.skus.iter().find(|s| s.sku_code == "X").unwrap();
    assert_eq!((x.triers, x.try_on_buyers), (20, 1));
    assert!((x.try_on_rate - 0.2).abs() < 1e-9 && (x.try_on_conversion - 0.05).abs() < 1e-9);
    assert!(x.try_on_flag);
    let flagged: Vec<&str> = flags
        .skus
        .iter()
        .filter(|s| s.try_on_flag)
        .map(|s| s.sku_code.as_str())
        .collect();
    assert_eq!(flagged, vec!["X"]);

    let staff = kpis
        .list_staff_metrics(reader(pb::ListStaffMetricsRequest {
            period: p,
            store: "BER".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    let e1 = &staff.staff[0];
    assert_eq!(
        (
            e1.staff_id.as_str(),
            e1.steps,
            e1.customers_served,
            e1.receipts,
            e1.sales_minor
        ),
        ("e1", 4_000, 8, 1, 5_000)
    );
    assert_eq!(e1.conversion, 0.125);

    let online = kpis
        .get_online_funnel(reader(pb::GetOnlineFunnelRequest { period: p }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            online.reach,
            online.visits,
            online.home_page_visits,
            online.inquiries,
            online.add_to_carts
        ),
        (1_000, 4, 1, 1, 2)
    );
    assert_eq!(online.effective_entry_rate, 0.004);
    assert_eq!(online.average_depth, 3.0);
    assert_eq!(online.bounce_rate, 0.25);
    assert_eq!(online.add_to_cart_conversion, 0.5);
    assert_eq!(online.paid_orders, 0);
}
