//! Visits: check-in and check-out on the service's clock with the dwell between,
//! key customers' overdue reminders once per period, and who sees which visits.

use chrono::Duration;
use retail_proto::events as ev;
use retail_proto::partner::{self as pb};
use tonic::Code;

use crate::helpers::*;

const ANNA: &str = "0b0c6a3e-6f5c-4d0e-9a51-000000000a01";
const BEN: &str = "0b0c6a3e-6f5c-4d0e-9a51-000000000b02";
const CARL: &str = "0b0c6a3e-6f5c-4d0e-9a51-000000000c03";

fn customer(name: &str) -> Option<pb::Customer> {
    Some(pb::Customer {
        display_name: name.into(),
        region: "north".into(),
        tax_id: String::new(),
    })
}

impl TestApp {
    async fn check_in_as(&self, partner: &str, user: &str, rep: &str, name: &str) -> Result<pb::Visit, tonic::Status> {
        self.visits()
            .check_in(as_user(
                partner,
                user,
                pb::CheckInRequest {
                    parent: format!("partners/{partner}"),
                    visit: Some(pb::Visit {
                        sales_rep: rep.into(),
                        customer: customer(name),
                        place: "Main street 1".into(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    async fn check_out_as(&self, partner: &str, user: &str, name: &str) -> Result<pb::Visit, tonic::Status> {
        self.visits()
            .check_out(as_user(partner, user, pb::CheckOutRequest { name: name.into() }))
            .await
            .map(|r| r.into_inner())
    }

    async fn visits_of(&self, partner: &str, user: &str) -> Result<Vec<pb::Visit>, tonic::Status> {
        self.visits()
            .list_visits(as_user(
                partner,
                user,
                pb::ListVisitsRequest {
                    parent: format!("partners/{partner}"),
                    ..Default::default()
                },
            ))
            .await
            .map(|r| r.into_inner().visits)
    }
}

#[tokio::test]
async fn a_visit_dwells_from_check_in_to_check_out_on_the_service_clock() {
    let app = spawn_app().await;
    app.active_in("acme", "north").await;
    let rep = app.rep("acme", ANNA).await;
    let visit = app.check_in_as("acme", ANNA, &rep.name, "Hotel Nord").await.unwrap();
    assert!(visit.name.starts_with("partners/acme/visits/"));
    assert_eq!(visit.sales_rep, rep.name);
    assert!(visit.check_out_time.is_none());
    assert_eq!(visit.dwell_seconds, 0);

    app.app.advance_clock(Duration::minutes(47));
    let out = app.check_out_as("acme", ANNA, &visit.name).await.unwrap();
    assert_eq!(out.dwell_seconds / 60, 47, "{out:?}");
    let dwell = out.check_out_time.unwrap().seconds - out.check_in_time.unwrap().seconds;
    assert_eq!(dwell, out.dwell_seconds);

    let again = app.check_out_as("acme", ANNA, &visit.name).await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    let listed = app.visits_of("acme", ANNA).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].dwell_seconds, out.dwell_seconds);
}

#[tokio::test]
async fn reps_see_their_own_visits_the_partner_its_own_and_no_one_another_partners() {
    let app = spawn_app().await;
    app.active_in("acme", "north").await;
    app.active_in("bolt", "north").await;
    let anna = app.rep("acme", ANNA).await;
    let ben = app.rep("acme", BEN).await;
    let carl = app.rep("bolt", CARL).await;
    let a = app.check_in_as("acme", ANNA, &anna.name, "Hotel Nord").await.unwrap();
    let b = app.check_in_as("acme", BEN, &ben.name, "Cafe Sud").await.unwrap();
    app.check_in_as("bolt", CARL, &carl.name, "Bar Ost").await.unwrap();

    // A rep may not check in as another rep, nor check out another rep's visit.
    let as_other = app.check_in_as("acme", ANNA, &ben.name, "X").await.unwrap_err();
    assert_eq!(as_other.code(), Code::NotFound);
    let others = app.check_out_as("acme", ANNA, &b.name).await.unwrap_err();
    assert_eq!(others.code(), Code::NotFound);
    // Another partner's visit and rep are NOT_FOUND.
    let foreign = app.check_out_as("bolt", CARL, &a.name).await.unwrap_err();
    assert_eq!(foreign.code(), Code::NotFound);
    let foreign_rep = app
        .check_in_as("bolt", "user-of-bolt", &anna.name, "X")
        .await
        .unwrap_err();
    assert_eq!(foreign_rep.code(), Code::NotFound);
    let foreign_list = app
        .visits()
        .list_visits(as_user(
            "bolt",
            CARL,
            pb::ListVisitsRequest {
                parent: "partners/acme".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(foreign_list.code(), Code::NotFound);

    let anna_sees: Vec<_> = app.visits_of("acme", ANNA).await.unwrap();
    assert_eq!(
        anna_sees.iter().map(|v| v.name.clone()).collect::<Vec<_>>(),
        vec![a.name.clone()]
    );
    let manager_sees = app.visits_of("acme", "user-of-acme").await.unwrap();
    assert_eq!(manager_sees.len(), 2);
    // The manager checks out a rep's visit.
    app.check_out_as("acme", "user-of-acme", &b.name).await.unwrap();
}

#[tokio::test]
async fn bad_visits_are_field_violations() {
    let app = spawn_app().await;
    app.active_in("acme", "north").await;
    let rep = app.rep("acme", ANNA).await;
    let err = app
        .visits()
        .check_in(as_user(
            "acme",
            ANNA,
            pb::CheckInRequest {
                parent: "partners/acme".into(),
                visit: Some(pb::Visit {
                    sales_rep: rep.name.clone(),
                    customer: customer(""),
                    latitude: 91.0,
                    longitude: 10.0,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields = violated_fields(&err);
    assert!(fields.contains(&"visit.latitude".to_owned()), "{fields:?}");
    assert!(fields.contains(&"visit.customer.display_name".to_owned()), "{fields:?}");
    let err = app
        .visits()
        .set_visit_cycle(as_partner(
            "acme",
            pb::SetVisitCycleRequest {
                parent: "partners/acme".into(),
                key_customer: Some(pb::KeyCustomer {
                    customer: customer("Hotel Nord"),
                    cycle_days: 0,
                    ..Default::default()
                }),
                update_mask: None,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), vec!["key_customer.cycle_days".to_owned()]);
}

#[tokio::test]
async fn an_overdue_key_customer_is_published_once_per_overdue_period() {
    let app = spawn_app().await;
    app.active_in("acme", "north").await;
    let rep = app.rep("acme", ANNA).await;
    let key = app
        .visits()
        .set_visit_cycle(as_partner(
            "acme",
            pb::SetVisitCycleRequest {
                parent: "partners/acme".into(),
                key_customer: Some(pb::KeyCustomer {
                    customer: customer("Hotel Nord"),
                    cycle_days: 14,
                    ..Default::default()
                }),
                update_mask: None,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    // A rep does not set cycles.
    let denied = app
        .visits()
        .set_visit_cycle(as_user(
            "acme",
            ANNA,
            pb::SetVisitCycleRequest {
                parent: "partners/acme".into(),
                key_customer: Some(pb::KeyCustomer {
                    customer: customer("Hotel Nord"),
                    cycle_days: 1,
                    ..Default::default()
                }),
                update_mask: None,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    app.app.advance_clock(Duration::days(10));
    // Matched as deal locks match customers.
    let v = app.check_in_as("acme", ANNA, &rep.name, "  HOTEL nord.").await.unwrap();
    app.app.advance_clock(Duration::days(13));
    assert_eq!(app.app.publish_overdue_visits(app.app.now()).await.unwrap(), 0);
    app.app.advance_clock(Duration::days(2));
    // Two sweeps at once: one publishes.
    let (a, b) = tokio::join!(
        app.app.publish_overdue_visits(app.app.now()),
        app.app.publish_overdue_visits(app.app.now())
    );
    assert_eq!(a.unwrap() + b.unwrap(), 1);
    app.app.sweep_sales().await.unwrap();
    assert_eq!(app.app.publish_overdue_visits(app.app.now()).await.unwrap(), 0);
    let due = v.check_in_time.unwrap().seconds + 14 * 86_400;
    let events = app.events::<ev::VisitOverdue>(1).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].key_customer, key.name);
    assert_eq!(events[0].due_time.unwrap().seconds, due);

    // The next period overdue without a visit: one more.
    app.app.advance_clock(Duration::days(14));
    app.app.sweep_sales().await.unwrap();
    app.app.sweep_sales().await.unwrap();
    let events = app.events::<ev::VisitOverdue>(2).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].due_time.unwrap().seconds, due + 14 * 86_400);
}

#[tokio::test]
async fn the_rep_home_screen_shows_targets_pipeline_visits_and_overdue_key_customers() {
    let app = spawn_app().await;
    app.active_in("acme", "north").await;
    app.active_in("bolt", "north").await;
    let anna = app.rep("acme", ANNA).await;
    let ben = app.rep("acme", BEN).await;
    let carl = app.rep("bolt", CARL).await;
    let now = app.app.now();
    let month = now.format("%Y-%m-01").to_string();
    let target = app
        .target(&anna.name, pb::PeriodKind::Month, &month, 1_000_00)
        .await
        .unwrap();
    app.app
        .record_sale(&retail_channel_partner::Sale {
            order_id: "o-1".into(),
            reference: String::new(),
            refund: false,
            partner_id: "acme".into(),
            sales_rep: anna.name.trim_start_matches("salesReps/").into(),
            currency: "EUR".into(),
            amount_minor: 250_00,
            at: now,
        })
        .await
        .unwrap();
    for (rep, title) in [(&anna, "a1"), (&anna, "a2"), (&ben, "b1")] {
        app.opportunities()
            .create_opportunity(as_partner(
                "acme",
                pb::CreateOpportunityRequest {
                    parent: "partners/acme".into(),
                    opportunity: Some(pb::Opportunity {
                        title: title.into(),
                        customer: customer(title),
                        sales_rep: rep.name.clone(),
                        amount_minor: 100_00,
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap();
    }
    app.visits()
        .set_visit_cycle(as_partner(
            "acme",
            pb::SetVisitCycleRequest {
                parent: "partners/acme".into(),
                key_customer: Some(pb::KeyCustomer {
                    customer: customer("Hotel Nord"),
                    cycle_days: 3,
                    ..Default::default()
                }),
                update_mask: None,
            },
        ))
        .await
        .unwrap();
    app.check_in_as("acme", ANNA, &anna.name, "Cafe Sud").await.unwrap();
    app.check_in_as("acme", ANNA, &anna.name, "Bar Ost").await.unwrap();
    app.check_in_as("acme", BEN, &ben.name, "Bar Ost").await.unwrap();
    app.app.advance_clock(Duration::days(4));

    let home = |partner: &'static str, user: &'static str, rep: String| {
        let mut client = app.visits();
        async move {
            client
                .get_rep_home(as_user(partner, user, pb::GetRepHomeRequest { sales_rep: rep }))
                .await
                .map(|r| r.into_inner())
        }
    };
    let h = home("acme", ANNA, anna.name.clone()).await.unwrap();
    assert_eq!(h.sales_rep, anna.name);
    assert_eq!(h.targets.len(), 1, "{h:?}");
    assert_eq!(h.targets[0].name, target.name);
    assert_eq!(h.targets[0].progress_minor, 250_00);
    assert_eq!(h.targets[0].attainment_bp, 2_500);
    assert_eq!(h.open_opportunities.len(), 1);
    assert_eq!(h.open_opportunities[0].stage, pb::PipelineStage::Identified as i32);
    assert_eq!(h.open_opportunities[0].count, 2);
    assert_eq!(h.open_opportunities[0].amount_minor, 200_00);
    assert_eq!(h.open_leads, 0);
    // Four days later is this week or the next; the week's count follows the clock.
    let week_start = week_start_of(app.app.now());
    let expected = if week_start <= now { 2 } else { 0 };
    assert_eq!(h.visits_this_week, expected);
    assert_eq!(h.overdue_key_customers.len(), 1);
    assert_eq!(
        h.overdue_key_customers[0].customer.as_ref().unwrap().display_name,
        "Hotel Nord"
    );

    // The manager sees any rep of the partner; another rep and another partner do not.
    assert_eq!(
        home("acme", "user-of-acme", anna.name.clone())
            .await
            .unwrap()
            .targets
            .len(),
        1
    );
    assert_eq!(
        home("acme", BEN, anna.name.clone()).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        home("bolt", CARL, anna.name.clone()).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        home("bolt", CARL, carl.name.clone())
            .await
            .unwrap()
            .open_opportunities
            .len(),
        0
    );
}

fn week_start_of(now: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    use chrono::Datelike;
    let day = now.date_naive() - Duration::days(i64::from(now.weekday().num_days_from_monday()));
    day.and_time(chrono::NaiveTime::MIN).and_utc()
}

#[tokio::test]
async fn key_customers_are_listed_and_read_by_their_partner_only() {
    let app = spawn_app().await;
    app.active("p1").await;
    app.active("p2").await;
    let mut names = Vec::new();
    for (name, days) in [("ACME", 7), ("Globex", 14), ("Initech", 30)] {
        let k = app
            .visits()
            .set_visit_cycle(as_partner(
                "p1",
                pb::SetVisitCycleRequest {
                    parent: "partners/p1".into(),
                    key_customer: Some(pb::KeyCustomer {
                        customer: customer(name),
                        cycle_days: days,
                        ..Default::default()
                    }),
                    update_mask: None,
                },
            ))
            .await
            .unwrap()
            .into_inner();
        names.push(k.name);
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .visits()
            .list_key_customers(as_partner(
                "p1",
                pb::ListKeyCustomersRequest {
                    parent: "partners/p1".into(),
                    page_size: 2,
                    page_token: token.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.key_customers.into_iter().map(|k| (k.name, k.cycle_days)));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let expected: Vec<(String, i32)> = names.iter().cloned().zip([7, 14, 30]).collect();
    assert_eq!(seen, expected);
    let one = app
        .visits()
        .get_key_customer(as_partner("p1", pb::GetKeyCustomerRequest { name: names[1].clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(one.customer.unwrap().display_name, "Globex");

    // A masked update changes one key customer's cycle by its name.
    let masked = |partner: &'static str, name: String, days: i32, paths: &[&str]| {
        let mut visits = app.visits();
        let paths: Vec<String> = paths.iter().map(|p| (*p).to_owned()).collect();
        async move {
            visits
                .set_visit_cycle(as_partner(
                    partner,
                    pb::SetVisitCycleRequest {
                        parent: format!("partners/{partner}"),
                        key_customer: Some(pb::KeyCustomer {
                            name,
                            cycle_days: days,
                            ..Default::default()
                        }),
                        update_mask: Some(prost_types::FieldMask { paths }),
                    },
                ))
                .await
                .map(|r| r.into_inner())
        }
    };
    let changed = masked("p1", names[1].clone(), 21, &["cycle_days"]).await.unwrap();
    assert_eq!((changed.name.as_str(), changed.cycle_days), (names[1].as_str(), 21));
    let bad = masked("p1", "keyCustomers/x".into(), 0, &["customer"])
        .await
        .unwrap_err();
    let mut fields = violated_fields(&bad);
    fields.sort();
    assert_eq!(fields, ["key_customer.cycle_days", "key_customer.name", "update_mask"]);
    let foreign = masked("p2", names[1].replace("partners/p1", "partners/p2"), 3, &["cycle_days"]);
    assert_eq!(foreign.await.unwrap_err().code(), Code::NotFound);

    let hidden = app
        .visits()
        .get_key_customer(as_partner("p2", pb::GetKeyCustomerRequest { name: names[1].clone() }))
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    let listed = app
        .visits()
        .list_key_customers(as_partner(
            "p2",
            pb::ListKeyCustomersRequest {
                parent: "partners/p1".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(listed.code(), Code::NotFound);
}
