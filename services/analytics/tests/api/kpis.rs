//! KPI answers on a small history whose figures are computed by hand below.

use helpers::*;
use retail_proto::analytics as pb;
use retail_proto::events as ev;
use retail_testkit::TestDatabase;

use crate::{T0, helpers};

/// Three members; in the period [T0, T0+10d): five orders (one a guest's), a
/// partial refund and four ratings; before it one order of m3.
pub(crate) fn shop() -> FakeLogs {
    let logs = FakeLogs {
        batch: 100,
        ..Default::default()
    };
    for (m, region) in [("m1", "DE-BE"), ("m2", "FR-IDF"), ("m3", "DE-BE")] {
        logs.push(
            "membership",
            m,
            T0 - 100 * DAY,
            &ev::MemberRegistered {
                member_id: m.into(),
                region: region.into(),
                register_time: ts(T0 - 100 * DAY),
            },
        );
    }
    logs.push(
        "membership",
        "m1",
        T0 - 90 * DAY,
        &ev::ConsentChanged {
            member_id: "m1".into(),
            channel: "email".into(),
            granted: true,
        },
    );
    logs.push(
        "catalog",
        "p1",
        T0 - 200 * DAY,
        &ev::ProductCreated {
            product_id: "p1".into(),
            category: "shoes".into(),
            title: "Runner".into(),
            sku_codes: vec!["S1".into(), "S2".into()],
            role: String::new(),
        },
    );
    for (sku, sellable) in [("S1", 0), ("S2", 5), ("B1", 3)] {
        logs.push(
            "catalog",
            sku,
            T0 - 200 * DAY,
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
    }
    logs.push(
        "catalog",
        "S1",
        T0 - 200 * DAY,
        &ev::ListingChanged {
            sku_code: "S1".into(),
            channel: "online".into(),
            listed: true,
        },
    );
    type Order<'a> = (&'a str, &'a str, &'a str, &'a str, i64, Vec<ev::OrderedUnits>);
    let orders: [Order; 6] = [
        ("o0", "m3", "store", "BER", T0 - 5 * DAY, vec![line("S1", 1, 2_000)]),
        ("o1", "m1", "store", "BER", T0 + 3_600, vec![line("S1", 2, 1_500)]),
        ("o2", "m1", "online", "", T0 + 2 * DAY, vec![line("S2", 1, 1_000)]),
        ("o3", "m2", "store", "BER", T0 + 3 * DAY, vec![line("S1", 1, 2_000)]),
        ("o4", "", "online", "", T0 + 4 * DAY, vec![line("S2", 4, 1_000)]),
        ("o5", "m3", "online", "", T0 + 6 * DAY, vec![line("S2", 1, 500)]),
    ];
    for (order, member, channel, store, at, lines) in orders {
        let amount = lines
            .iter()
            .map(|l| l.quantity * l.unit_price.as_ref().map(|m| m.amount_minor).unwrap_or(0))
            .sum();
        logs.push(
            "orders",
            member,
            at,
            &ev::OrderPaid {
                order_id: order.into(),
                parties: parties(member, channel, store),
                lines,
                amount: money(amount),
                pay_time: ts(at),
            },
        );
    }
    logs.push(
        "orders",
        "m2",
        T0 + 5 * DAY,
        &ev::OrderRefunded {
            order_id: "o3".into(),
            return_id: "r1".into(),
            parties: parties("m2", "store", "BER"),
            lines: vec![],
            amount: money(500),
            refund_time: ts(T0 + 5 * DAY),
        },
    );
    for (order, satisfaction, recommend) in [("o1", 5, 10), ("o2", 4, 9), ("o3", 2, 6), ("o4", 3, 7)] {
        logs.push(
            "orders",
            "x",
            T0 + 7 * DAY,
            &ev::OrderRated {
                order_id: order.into(),
                parties: None,
                satisfaction,
                recommend,
            },
        );
    }
    logs
}

pub(crate) async fn shop_app() -> (TestDatabase, TestApp) {
    let logs = shop();
    let database = TestDatabase::new().await.unwrap();
    let sources = [
        ("membership", logs.serve("membership").await),
        ("catalog", logs.serve("catalog").await),
    ];
    let app = start(&database, &sources, |_| {}).await;
    app.caught_up(&[("membership", logs.len("membership")), ("catalog", logs.len("catalog"))])
        .await;
    app.task.abort();
    let orders = logs.serve("orders").await;
    let app = start(&database, &[sources[0], sources[1], ("orders", orders)], |_| {}).await;
    app.caught_up(&[("orders", logs.len("orders"))]).await;
    (database, app)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

#[tokio::test]
async fn kpis_by_hand() {
    let (_db, app) = shop_app().await;
    let mut kpis = app.kpis.clone();
    let p = period(T0, T0 + 10 * DAY);

    // Sales: revenue 3000+1000+2000+4000+500-500 = 10000, 5 orders, AOV 2000,
    // members m1 m2 m3 -> 3000 each... 10000/3; units 2+1+1+4+1 = 9.
    // Previous 10 days: o0 2000, 1 order, 1 unit.
    let sales = kpis
        .get_sales_report(reader(pb::GetSalesReportRequest {
            period: p,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let cur = sales.current.unwrap();
    assert_eq!(
        (
            cur.revenue_minor,
            cur.orders,
            cur.units,
            cur.customers,
            cur.refunded_minor
        ),
        (10_000, 5, 9, 3, 500)
    );
    assert!(close(cur.average_order_value_minor, 2_000.0));
    assert!(close(cur.spend_per_customer_minor, 10_000.0 / 3.0));
    assert!(close(cur.items_per_ticket, 1.8));
    assert!(close(sales.revenue_growth, 4.0));
    assert!(close(sales.orders_growth, 4.0));
    assert!(close(sales.average_order_value_growth, 0.0));
    assert!(close(sales.items_per_ticket_growth, 0.8));
    let fresh = sales.freshness.unwrap();
    assert!(fresh.positions.iter().any(|s| s.source == "orders" && s.position == 11));

    // By channel: store o1 + o3 - refund = 4500, 2 orders, customers m1 m2.
    let store = kpis
        .get_sales_report(reader(pb::GetSalesReportRequest {
            period: p,
            dimension: "channel".into(),
            dimension_value: "store".into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .current
        .unwrap();
    assert_eq!((store.revenue_minor, store.orders, store.customers), (4_500, 2, 2));
    // By region (from membership): DE-BE = m1 and m3 = 3000+1000+500.
    let region = kpis
        .get_sales_report(reader(pb::GetSalesReportRequest {
            period: p,
            dimension: "region".into(),
            dimension_value: "DE-BE".into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .current
        .unwrap();
    assert_eq!((region.revenue_minor, region.orders), (4_500, 3));
    // By category (from catalog): all lines are shoes.
    let shoes = kpis
        .get_sales_report(reader(pb::GetSalesReportRequest {
            period: p,
            dimension: "category".into(),
            dimension_value: "shoes".into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .current
        .unwrap();
    assert_eq!((shoes.revenue_minor, shoes.units), (10_500, 9));

    // Satisfaction: ratings 5 4 2 3 -> 3.5; NPS answers 10 9 6 7 -> (2-1)/4 = 25.
    let sat = kpis
        .get_satisfaction(reader(pb::GetSatisfactionRequest {
            period: p,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (sat.ratings, sat.respondents, sat.promoters, sat.detractors),
        (4, 4, 2, 1)
    );
    assert!(close(sat.average_rating, 3.5));
    assert!(close(sat.nps, 25.0));

    // Pyramid: m3 bought before, ranked alone (top 2%); m1, m2 (first purchase
    // in the period) and the guest order form the base layer.
    let pyramid = kpis
        .get_pyramid(reader(pb::GetPyramidRequest { period: p }))
        .await
        .unwrap()
        .into_inner();
    let layer = |name: &str| pyramid.layers.iter().find(|l| l.layer == name).unwrap().clone();
    assert_eq!((layer("top_2").headcount, layer("top_2").revenue_minor), (1, 500));
    assert!(close(layer("top_2").share_of_revenue, 0.05));
    assert_eq!(
        (
            layer("base").headcount,
            layer("base").revenue_minor,
            layer("base").orders
        ),
        (3, 9_500, 4)
    );
    assert!(close(layer("base").share_of_customers, 0.75));
    assert_eq!(layer("20_100").headcount, 0);

    // Members: 3 registered, all activated, 3 purchasing, 1 marketable.
    let stats = kpis
        .get_member_stats(reader(pb::GetMemberStatsRequest { period: p }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (stats.registered, stats.activated, stats.purchasing, stats.marketable),
        (3, 3, 3, 1)
    );
    // Monthly active in June: m1, m2, m3 bought in it.
    assert_eq!(stats.monthly_active, 3);

    // RFM at T0+10d: R days 8, 7, 4 -> scores 1, 2, 4; F 2, 1, 2 -> 2, 1, 2;
    // M 4000, 1500, 2500 -> 4, 1, 2; means 7/3, 5/3, 7/3.
    let rfm = kpis
        .list_member_rfm(reader(pb::ListMemberRfmRequest {
            as_of_time: ts(T0 + 10 * DAY),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let got: Vec<(String, i32, i32, i32, String)> = rfm
        .members
        .iter()
        .map(|m| (m.member_id.clone(), m.r_score, m.f_score, m.m_score, m.segment.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("m1".into(), 1, 2, 4, "at_risk_loyal".into()),
            ("m2".into(), 2, 1, 1, "lost_low_value".into()),
            ("m3".into(), 4, 2, 2, "loyal_low_spend".into()),
        ]
    );
    let m3 = &rfm.members[2];
    assert!(close(m3.cycle_days, 11.0));
    assert_eq!(m3.next_purchase_time.unwrap().seconds, T0 + 17 * DAY);
    let dist = kpis
        .get_rfm_distribution(reader(pb::GetRfmDistributionRequest {
            as_of_time: ts(T0 + 10 * DAY),
            window_days: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dist.segments.len(), 8);
    assert_eq!(dist.segments.iter().map(|s| s.members).sum::<i64>(), 3);
    assert!(close(dist.mean_f_score, 5.0 / 3.0));

    // Lifecycle at the end (W 90): m1 new_repeat, m2 new_once, m3 new_repeat; from
    // the start: m1 and m2 were prospects, m3 new_once.
    let life = kpis
        .get_lifecycle(reader(pb::GetLifecycleRequest {
            period: p,
            window_days: 90,
        }))
        .await
        .unwrap()
        .into_inner();
    let count = |s: &str| life.distribution.iter().find(|c| c.state == s).unwrap().members;
    assert_eq!((count("new_repeat"), count("new_once"), count("lost")), (2, 1, 0));
    let flow = |a: &str, b: &str| {
        life.flows
            .iter()
            .find(|f| f.from_state == a && f.to_state == b)
            .map(|f| (f.members, f.direction.clone()))
    };
    assert_eq!(flow("prospect", "new_repeat"), Some((1, "forward".into())));
    assert_eq!(flow("new_once", "new_repeat"), Some((1, "same".into())));

    // Stickiness: m1 bought twice of three customers; ARPU (4000+1500+500)/3.
    let sticky = kpis
        .get_stickiness(reader(pb::GetStickinessRequest {
            period: p,
            window_days: 90,
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(close(sticky.repeat_purchase_rate, 1.0 / 3.0));
    assert!(close(sticky.active_arpu_minor, 2_000.0));
    assert!(close(sticky.churn_rate, 0.0));
    assert_eq!(sticky.cohorts.len(), 1);
    assert_eq!(
        (sticky.cohorts[0].cohort.as_str(), sticky.cohorts[0].customers),
        ("2026-06", 2)
    );

    // CLV: the three members came through the store; their period orders 3000,
    // 1000, 2000 (500 back), 500: AOV 6000/4 = 1500, 4/3 purchases in 10 days.
    let mut admin_client = app.admin.clone();
    admin_client
        .set_acquisition_cost(admin(pb::SetAcquisitionCostRequest {
            channel: "store".into(),
            cac_minor: 10_000,
        }))
        .await
        .unwrap();
    let value = kpis
        .get_customer_value(reader(pb::GetCustomerValueRequest { period: p }))
        .await
        .unwrap()
        .into_inner();
    let store_value = value.channels.iter().find(|c| c.channel == "store").unwrap();
    assert_eq!(store_value.customers, 3);
    let per_year = (4.0 / 3.0) / (10.0 / 365.0);
    assert!(close(store_value.purchases_per_year, per_year));
    assert!(close(store_value.clv_minor, 1_500.0 * per_year * 3.0 * 0.4));
    assert!(close(store_value.return_rate, 500.0 / 6_500.0));
    assert!(close(store_value.effective_cac_minor, 10_000.0 * 13.0 / 12.0));

    // Goods: S1 is listed without stock; B1 in stock never sold.
    let goods = kpis
        .get_goods_report(reader(pb::GetGoodsReportRequest {
            as_of_time: ts(T0 + 10 * DAY),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        goods.stock_outs.iter().map(|g| g.sku_code.as_str()).collect::<Vec<_>>(),
        vec!["S1"]
    );
    assert_eq!(
        goods
            .slow_movers
            .iter()
            .map(|g| g.sku_code.as_str())
            .collect::<Vec<_>>(),
        vec!["B1"]
    );

    // Classes: no clicks (CTR 0 = the median, high); units S1 3, S2 6, median 4.5.
    let classes = kpis
        .list_product_classes(reader(pb::ListProductClassesRequest {
            period: p,
            category: "shoes".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    let got: Vec<(String, String)> = classes
        .products
        .iter()
        .map(|c| (c.sku_code.clone(), c.class.clone()))
        .collect();
    assert_eq!(got, vec![("S2".into(), "A".into()), ("S1".into(), "C".into())]);

    // Overdue at T0+30d (factor 1.5): m1 (cycle 23/24 d... 1.96 d) and m3 (11 d).
    let overdue = kpis
        .list_overdue_members(reader(pb::ListOverdueMembersRequest {
            as_of_time: ts(T0 + 30 * DAY),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = overdue.members.iter().map(|m| m.member_id.as_str()).collect();
    assert_eq!(ids, vec!["m1", "m3"]);
    // Published once per last purchase.
    assert_eq!(app.app.publish_overdue(T0 + 30 * DAY).await.unwrap(), 2);
    assert_eq!(app.app.publish_overdue(T0 + 31 * DAY).await.unwrap(), 0);
    let published = retail_analytics::store::scalar(
        &app.app.db,
        "SELECT COUNT(*) FROM outbox WHERE event_type = ?",
        vec!["retail.events.v1.MemberOverdue".into()],
    )
    .await
    .unwrap();
    assert_eq!(published, 2);
}

#[tokio::test]
async fn bad_requests_name_every_field_and_reads_need_the_scope() {
    let database = TestDatabase::new().await.unwrap();
    let app = start(&database, &[], |_| {}).await;
    let mut kpis = app.kpis.clone();
    let err = kpis
        .get_sales_report(reader(pb::GetSalesReportRequest {
            period: period(T0, T0 - 1),
            dimension: "planet".into(),
            dimension_value: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(violated_fields(&err), vec!["period", "dimension"]);
    let err = kpis
        .get_sales_report(reader(pb::GetSalesReportRequest {
            period: period(T0, T0 + DAY),
            dimension: "channel".into(),
            dimension_value: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), vec!["dimension_value"]);
    let err = kpis
        .list_member_rfm(reader(pb::ListMemberRfmRequest {
            window_days: -1,
            segment: "vip".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), vec!["window_days", "segment"]);
    let err = kpis
        .list_member_rfm(reader(pb::ListMemberRfmRequest {
            member: "members/nobody".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = kpis
        .get_pyramid(with_token(
            &staff_token(&["orders.read"]),
            pb::GetPyramidRequest {
                period: period(T0, T0 + DAY),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let err = app
        .admin
        .clone()
        .set_acquisition_cost(admin(pb::SetAcquisitionCostRequest {
            channel: String::new(),
            cac_minor: -1,
        }))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), vec!["channel", "cac_minor"]);
}

#[tokio::test]
async fn imported_history_counts_once_and_must_continue_the_positions() {
    let database = TestDatabase::new().await.unwrap();
    let app = start(&database, &[], |_| {}).await;
    let history = FakeLogs::default();
    for (i, amount) in [(1, 1_000), (2, 2_500)] {
        history.push(
            "import",
            "m1",
            T0 - 400 * DAY + i * DAY,
            &ev::OrderPaid {
                order_id: format!("h{i}"),
                parties: parties("m1", "online", ""),
                lines: vec![line("S1", 1, amount)],
                amount: money(amount),
                pay_time: ts(T0 - 400 * DAY + i * DAY),
            },
        );
    }
    let events = history.logs.lock().unwrap()["import"].clone();
    let mut admin_client = app.admin.clone();
    let import = |events: Vec<ev::EventEnvelope>| pb::ImportEventsRequest { events };
    let out = admin_client
        .import_events(admin(import(events.clone())))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((out.applied, out.position), (2, 2));
    // A retry applies nothing.
    let out = admin_client
        .import_events(admin(import(events.clone())))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((out.applied, out.position), (0, 2));
    // A gap is refused.
    let mut later = events[1].clone();
    later.position = 5;
    let err = admin_client
        .import_events(admin(import(vec![later])))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    let sales = app
        .kpis
        .clone()
        .get_sales_report(reader(pb::GetSalesReportRequest {
            period: period(T0 - 400 * DAY, T0 - 390 * DAY),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sales.current.unwrap().revenue_minor, 3_500);
    let err = admin_client.import_events(reader(import(vec![]))).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
}
