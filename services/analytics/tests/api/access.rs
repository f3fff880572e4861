//! Store scoping of the gRPC KPI API: a store manager reads the per-store KPIs of
//! his own stores only (the `stores` claim) and neither suite-wide sales nor
//! member-level rows; analysts, admins and services read everything.

use retail_kit::auth::PrincipalKind;
use retail_proto::analytics::{self as pb};
use retail_proto::events as ev;
use retail_testkit::TestDatabase;
use retail_testkit::tokens::{claims, sign};
use tonic::Code;

use crate::T0;
use crate::helpers::*;

fn as_user<T>(roles: &[&str], stores: &[&str], kind: PrincipalKind, message: T) -> tonic::Request<T> {
    let mut c = claims("user-1", kind, &["analytics.read"], None);
    c.roles = roles.iter().map(|r| (*r).to_owned()).collect();
    c.stores = stores.iter().map(|s| (*s).to_owned()).collect();
    with_token(&sign(&c), message)
}

fn manager<T>(message: T) -> tonic::Request<T> {
    as_user(&["store_manager"], &["BER"], PrincipalKind::Staff, message)
}

fn analyst<T>(message: T) -> tonic::Request<T> {
    as_user(&["analyst"], &[], PrincipalKind::Staff, message)
}

fn sales(dimension: &str, value: &str) -> pb::GetSalesReportRequest {
    pb::GetSalesReportRequest {
        period: period(T0 - DAY, T0 + DAY),
        dimension: dimension.into(),
        dimension_value: value.into(),
    }
}

fn satisfaction(dimension: &str, value: &str) -> pb::GetSatisfactionRequest {
    pb::GetSatisfactionRequest {
        period: period(T0 - DAY, T0 + DAY),
        dimension: dimension.into(),
        dimension_value: value.into(),
    }
}

fn revenue(r: Result<tonic::Response<pb::SalesReport>, tonic::Status>) -> i64 {
    r.unwrap().into_inner().current.unwrap().revenue_minor
}

fn denied<T: std::fmt::Debug>(r: Result<T, tonic::Status>, what: &str) {
    assert_eq!(r.unwrap_err().code(), Code::PermissionDenied, "{what}");
}

#[tokio::test]
async fn a_store_manager_reads_his_stores_only_and_an_analyst_every_store() {
    let logs = FakeLogs::default();
    for (i, (store, amount)) in [("BER", 1_000), ("HAM", 2_500)].iter().enumerate() {
        logs.push(
            "orders",
            store,
            T0,
            &ev::OrderPaid {
                order_id: format!("o{i}"),
                parties: parties("", "store", store),
                lines: vec![line("SKU-1", 1, *amount)],
                amount: money(*amount),
                pay_time: ts(T0),
            },
        );
    }
    let database = TestDatabase::new().await.unwrap();
    let app = start(&database, &[("orders", logs.serve("orders").await)], |_| {}).await;
    app.caught_up(&[("orders", 2)]).await;
    let mut kpis = app.kpis.clone();

    // Sales: his store's figures; another store, every store, or a breakdown
    // across stores are refused.
    assert_eq!(
        revenue(kpis.get_sales_report(manager(sales("store", "BER"))).await),
        1_000
    );
    denied(
        kpis.get_sales_report(manager(sales("store", "HAM"))).await,
        "sales of HAM",
    );
    denied(
        kpis.get_sales_report(manager(sales("", ""))).await,
        "sales of every store",
    );
    denied(
        kpis.get_sales_report(manager(sales("channel", "store"))).await,
        "sales by channel",
    );
    // A bad request is still INVALID_ARGUMENT, not a permission question.
    let bad = kpis.get_sales_report(manager(sales("store", ""))).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    // The analyst: everything.
    assert_eq!(revenue(kpis.get_sales_report(analyst(sales("", ""))).await), 3_500);
    assert_eq!(
        revenue(kpis.get_sales_report(analyst(sales("store", "HAM"))).await),
        2_500
    );
    assert_eq!(
        revenue(kpis.get_sales_report(analyst(sales("channel", "store"))).await),
        3_500
    );
    // A service (no roles) and an admin: every store.
    let service = as_user(&[], &[], PrincipalKind::Service, sales("", ""));
    assert_eq!(revenue(kpis.get_sales_report(service).await), 3_500);
    let admin_user = as_user(&["admin"], &[], PrincipalKind::Staff, sales("store", "HAM"));
    assert_eq!(revenue(kpis.get_sales_report(admin_user).await), 2_500);

    // Satisfaction: the same rule.
    kpis.get_satisfaction(manager(satisfaction("store", "BER")))
        .await
        .unwrap();
    denied(
        kpis.get_satisfaction(manager(satisfaction("store", "HAM"))).await,
        "NPS of HAM",
    );
    denied(
        kpis.get_satisfaction(manager(satisfaction("", ""))).await,
        "NPS overall",
    );
    kpis.get_satisfaction(analyst(satisfaction("", ""))).await.unwrap();

    // The store-level KPIs.
    let p = || period(T0 - DAY, T0 + DAY);
    for store in ["BER", "HAM"] {
        let funnel = pb::GetStoreFunnelRequest {
            period: p(),
            store: store.into(),
        };
        let flags = pb::ListSkuFlagsRequest {
            period: p(),
            store: store.into(),
            ..Default::default()
        };
        let staff = pb::ListStaffMetricsRequest {
            period: p(),
            store: store.into(),
        };
        kpis.get_store_funnel(analyst(funnel.clone())).await.unwrap();
        kpis.list_sku_flags(analyst(flags.clone())).await.unwrap();
        kpis.list_staff_metrics(analyst(staff.clone())).await.unwrap();
        if store == "BER" {
            kpis.get_store_funnel(manager(funnel)).await.unwrap();
            kpis.list_sku_flags(manager(flags)).await.unwrap();
            kpis.list_staff_metrics(manager(staff)).await.unwrap();
        } else {
            denied(kpis.get_store_funnel(manager(funnel)).await, "funnel of HAM");
            denied(kpis.list_sku_flags(manager(flags)).await, "SKU flags of HAM");
            denied(kpis.list_staff_metrics(manager(staff)).await, "staff of HAM");
        }
    }

    // Member-level rows: not a store manager's.
    denied(
        kpis.list_member_rfm(manager(pb::ListMemberRfmRequest::default())).await,
        "RFM members",
    );
    denied(
        kpis.list_overdue_members(manager(pb::ListOverdueMembersRequest::default()))
            .await,
        "overdue members",
    );
    kpis.list_member_rfm(analyst(pb::ListMemberRfmRequest::default()))
        .await
        .unwrap();
    kpis.list_overdue_members(analyst(pb::ListOverdueMembersRequest::default()))
        .await
        .unwrap();

    // Brand-wide KPIs without a store dimension stay readable.
    kpis.get_pyramid(manager(pb::GetPyramidRequest { period: p() }))
        .await
        .unwrap();
    kpis.get_member_stats(manager(pb::GetMemberStatsRequest { period: p() }))
        .await
        .unwrap();

    // A store manager without stores assigned sees no store.
    let none = as_user(&["store_manager"], &[], PrincipalKind::Staff, sales("store", "BER"));
    denied(kpis.get_sales_report(none).await, "no stores assigned");
}
