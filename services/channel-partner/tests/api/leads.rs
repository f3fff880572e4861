//! Leads: MAN scores kept with their inputs and ranked, distribution by region,
//! level and capacity with its reason, decline and time-out to the next partner
//! and never back, outcomes, isolation between partners. Time is the service's
//! clock, moved by the tests.

use chrono::Duration;
use retail_channel_partner::Sale;
use retail_proto::events as ev;
use retail_proto::partner::{self as pb};
use tonic::Code;

use crate::helpers::*;

/// One billion major units in cents.
const BILLION: i64 = 100_000_000_000;

fn lead(region: &str, annual: i64, authority: i32, need: i32) -> pb::Lead {
    pb::Lead {
        customer: Some(pb::Customer {
            display_name: format!("Customer in {region}"),
            region: region.into(),
            tax_id: String::new(),
        }),
        customer_class: pb::CustomerClass::A.into(),
        annual_budget_minor: annual,
        special_budget_minor: 0,
        financial_trend: pb::FinancialTrend::Stable.into(),
        authority_score: authority,
        need_score: need,
        need: "pumps for a new plant".into(),
        ..Default::default()
    }
}

impl TestApp {
    async fn create_lead(&self, l: pb::Lead) -> Result<pb::Lead, tonic::Status> {
        self.leads()
            .create_lead(authed(pb::CreateLeadRequest {
                lead: Some(l),
                request_id: String::new(),
            }))
            .await
            .map(|r| r.into_inner())
    }

    async fn get_lead(&self, request: tonic::Request<pb::GetLeadRequest>) -> Result<pb::Lead, tonic::Status> {
        self.leads().get_lead(request).await.map(|r| r.into_inner())
    }

    async fn accept(&self, partner: &str, name: &str) -> Result<pb::Lead, tonic::Status> {
        self.leads()
            .accept_lead(as_partner(partner, pb::AcceptLeadRequest { name: name.into() }))
            .await
            .map(|r| r.into_inner())
    }

    async fn decline(&self, partner: &str, name: &str, reason: &str) -> Result<pb::Lead, tonic::Status> {
        self.leads()
            .decline_lead(as_partner(
                partner,
                pb::DeclineLeadRequest {
                    name: name.into(),
                    reason: reason.into(),
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    async fn outcome(&self, partner: &str, name: &str, won: bool, reason: &str) -> Result<pb::Lead, tonic::Status> {
        self.leads()
            .report_lead_outcome(as_partner(
                partner,
                pb::ReportLeadOutcomeRequest {
                    name: name.into(),
                    won,
                    reason: reason.into(),
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    async fn brand_lead(&self, name: &str) -> pb::Lead {
        self.get_lead(authed(pb::GetLeadRequest { name: name.into() }))
            .await
            .unwrap()
    }

    async fn ranked(&self, request: tonic::Request<pb::ListLeadsRequest>) -> Vec<String> {
        self.leads()
            .list_leads(request)
            .await
            .unwrap()
            .into_inner()
            .leads
            .into_iter()
            .map(|l| l.name)
            .collect()
    }
}

fn all_leads() -> pb::ListLeadsRequest {
    pb::ListLeadsRequest {
        page_size: 100,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_declined_or_timed_out_lead_goes_to_the_next_partner_and_never_back() {
    let app = spawn_app().await;
    app.active_in("n1", "north").await;
    app.active_in("n2", "North").await;
    app.active_in("s1", "south").await;
    let l = app.create_lead(lead("north", BILLION, 3, 3)).await.unwrap();
    assert_eq!(l.state, pb::LeadState::Offered as i32);
    assert_eq!(l.partner, "partners/n1");
    assert!(l.assignment_reason.contains("region north"), "{}", l.assignment_reason);
    let created = l.create_time.unwrap().seconds;
    assert_eq!(l.accept_deadline.unwrap().seconds - created, 48 * 3600);
    // The partner of another region does not see it.
    let other = app
        .get_lead(as_partner("s1", pb::GetLeadRequest { name: l.name.clone() }))
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::NotFound);
    assert_eq!(app.accept("s1", &l.name).await.unwrap_err().code(), Code::NotFound);
    // n1 declines: n2 has it; n1 no longer sees it.
    let declined = app.decline("n1", &l.name, "no installer free").await.unwrap();
    assert_eq!(declined.partner, "partners/n2");
    assert_eq!(
        app.get_lead(as_partner("n1", pb::GetLeadRequest { name: l.name.clone() }))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    // n2 lets the deadline pass: nobody eligible is left (n1 declined it).
    app.app.advance_clock(Duration::hours(47));
    assert_eq!(app.app.sweep_sales().await.unwrap().1, 0);
    app.app.advance_clock(Duration::hours(2));
    assert_eq!(app.app.sweep_sales().await.unwrap().1, 1);
    let brand = app.brand_lead(&l.name).await;
    assert_eq!(brand.state, pb::LeadState::Unassigned as i32);
    assert_eq!(brand.partner, "");
    let offers: Vec<(String, String, String)> = brand
        .offers
        .iter()
        .map(|o| (o.partner.clone(), o.outcome.clone(), o.outcome_reason.clone()))
        .collect();
    assert_eq!(
        offers,
        [
            (
                "partners/n1".to_owned(),
                "declined".to_owned(),
                "no installer free".to_owned()
            ),
            (
                "partners/n2".to_owned(),
                "timed_out".to_owned(),
                "no answer before the deadline".to_owned()
            ),
        ]
    );
    // A new northern partner: the sweep offers it there, never back to n1 or n2.
    app.active_in("n3", "north").await;
    app.app.sweep_sales().await.unwrap();
    let offered = app.brand_lead(&l.name).await;
    assert_eq!(offered.partner, "partners/n3");
    // Too late for n2 to accept.
    assert_eq!(app.accept("n2", &l.name).await.unwrap_err().code(), Code::NotFound);
    let accepted = app.accept("n3", &l.name).await.unwrap();
    assert_eq!(accepted.state, pb::LeadState::Accepted as i32);
    assert!(accepted.offers.is_empty(), "a partner does not see the other offers");
    // Lost needs a reason.
    let no_reason = app.outcome("n3", &l.name, false, "").await.unwrap_err();
    assert_eq!(violated_fields(&no_reason), ["reason"]);
    let lost = app.outcome("n3", &l.name, false, "price too high").await.unwrap();
    assert_eq!(lost.state, pb::LeadState::Lost as i32);
    assert_eq!(lost.outcome_reason, "price too high");
    assert_eq!(
        app.outcome("n3", &l.name, true, "").await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    let changes: Vec<String> = app
        .events::<ev::LeadChanged>(8)
        .await
        .into_iter()
        .map(|c| format!("{}:{}", c.change, c.partner_id))
        .collect();
    assert_eq!(
        changes,
        [
            "offered:n1",
            "declined:n1",
            "offered:n2",
            "timed_out:n2",
            "unassigned:",
            "offered:n3",
            "accepted:n3",
            "lost:n3"
        ]
    );
}

#[tokio::test]
async fn leads_go_to_the_higher_level_first_within_each_partners_capacity() {
    let app = spawn_app_with(|s| s.sales.lead_capacity = 1).await;
    app.active_in("n1", "north").await;
    app.active_in("n2", "north").await;
    // n2 reaches silver (lead priority 2 over registered's 1).
    app.app
        .record_sale(&Sale {
            order_id: "o-1".into(),
            reference: String::new(),
            refund: false,
            partner_id: "n2".into(),
            sales_rep: String::new(),
            currency: "EUR".into(),
            amount_minor: 50_000_00,
            at: chrono::Utc::now(),
        })
        .await
        .unwrap();
    assert_eq!(app.partner("n2").await.level, "silver");
    let first = app.create_lead(lead("north", BILLION, 3, 3)).await.unwrap();
    assert_eq!(first.partner, "partners/n2");
    assert!(
        first.assignment_reason.contains("level silver (lead priority 2)")
            && first.assignment_reason.contains("0 of 1 open leads"),
        "{}",
        first.assignment_reason
    );
    // n2 is full: n1.
    let second = app.create_lead(lead("north", BILLION, 3, 3)).await.unwrap();
    assert_eq!(second.partner, "partners/n1");
    // Both full: unassigned, with why.
    let third = app.create_lead(lead("north", BILLION, 3, 3)).await.unwrap();
    assert_eq!(third.state, pb::LeadState::Unassigned as i32);
    assert!(third.assignment_reason.contains("no active partner"));
    // n2 wins its lead: room again, and the sweep offers the waiting lead.
    app.accept("n2", &first.name).await.unwrap();
    app.outcome("n2", &first.name, true, "").await.unwrap();
    app.app.sweep_sales().await.unwrap();
    assert_eq!(app.brand_lead(&third.name).await.partner, "partners/n2");
    // The brand cannot answer an offer for a partner; a partner cannot create leads.
    assert_eq!(
        app.leads()
            .accept_lead(authed(pb::AcceptLeadRequest {
                name: third.name.clone()
            }))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    assert_eq!(
        app.leads()
            .create_lead(as_partner(
                "n1",
                pb::CreateLeadRequest {
                    lead: Some(lead("north", 0, 1, 1)),
                    request_id: String::new(),
                }
            ))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    // Each partner lists only its own leads.
    assert_eq!(
        app.ranked(as_partner("n1", all_leads())).await,
        std::slice::from_ref(&second.name)
    );
}

#[tokio::test]
async fn leads_are_scored_by_man_ranked_and_rescored_when_their_inputs_change() {
    let app = spawn_app().await;
    // Exactly one billion: money 1; total 0.4 + 0.9 + 0.9 = 2.2.
    let one = app.create_lead(lead("east", BILLION, 3, 3)).await.unwrap();
    let s = one.score.clone().unwrap();
    assert_eq!((s.money, s.authority, s.need, s.total_tenths), (1, 3, 3, 22));
    assert_eq!(s.total, "2.2");
    assert_eq!(one.state, pb::LeadState::Unassigned as i32);
    // One cent more starts the second billion: money 2; total 2.6.
    let two = app.create_lead(lead("east", BILLION + 1, 3, 3)).await.unwrap();
    assert_eq!(two.score.as_ref().unwrap().money, 2);
    assert_eq!(two.score.as_ref().unwrap().total, "2.6");
    // Same as the first, later.
    let three = app.create_lead(lead("east", BILLION, 3, 3)).await.unwrap();
    assert_eq!(
        app.ranked(authed(all_leads())).await,
        [two.name.clone(), one.name.clone(), three.name.clone()]
    );
    // A special budget of one cent lifts the first to 2.6: it ties with the
    // second and, being earlier, ranks first. The inputs are kept with the score.
    app.app.advance_clock(Duration::minutes(5));
    let updated = app
        .leads()
        .update_lead(authed(pb::UpdateLeadRequest {
            lead: Some(pb::Lead {
                name: one.name.clone(),
                special_budget_minor: 1,
                financial_trend: pb::FinancialTrend::Positive.into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["special_budget_minor".into()],
            }),
        }))
        .await
        .unwrap()
        .into_inner();
    let s = updated.score.unwrap();
    assert_eq!((s.money, s.total.as_str()), (2, "2.6"));
    assert_eq!(s.special_budget_minor, 1);
    assert_eq!(s.financial_trend, pb::FinancialTrend::Stable as i32, "not in the mask");
    assert!(s.score_time.unwrap().seconds >= one.score.unwrap().score_time.unwrap().seconds + 300);
    assert_eq!(
        app.ranked(authed(all_leads())).await,
        [one.name.clone(), two.name.clone(), three.name.clone()]
    );
    // Paging keeps the ranking.
    let first_page = app
        .leads()
        .list_leads(authed(pb::ListLeadsRequest {
            page_size: 2,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first_page.leads.len(), 2);
    let rest = app
        .ranked(authed(pb::ListLeadsRequest {
            page_size: 2,
            page_token: first_page.next_page_token,
            ..Default::default()
        }))
        .await;
    assert_eq!(rest, std::slice::from_ref(&three.name));
    // Bad input names every field.
    let mut bad = lead("east", -1, 0, 6);
    bad.customer_class = 0;
    bad.financial_trend = 0;
    let status = app.create_lead(bad).await.unwrap_err();
    let mut fields = violated_fields(&status);
    fields.sort();
    assert_eq!(
        fields,
        [
            "lead.annual_budget_minor",
            "lead.authority_score",
            "lead.customer_class",
            "lead.financial_trend",
            "lead.need_score",
        ]
    );
    let status = app
        .leads()
        .update_lead(authed(pb::UpdateLeadRequest {
            lead: Some(pb::Lead {
                name: one.name.clone(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["customer".into()],
            }),
        }))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["update_mask"]);
}

#[tokio::test]
async fn leads_created_at_once_never_pass_a_partners_capacity() {
    let app = spawn_app_with(|s| s.sales.lead_capacity = 2).await;
    for id in ["n1", "n2", "n3"] {
        app.active_in(id, "north").await;
    }
    let created = futures::future::join_all((0..20).map(|_| app.create_lead(lead("north", BILLION, 3, 3)))).await;
    let mut offered = std::collections::BTreeMap::<String, usize>::new();
    let mut unassigned = 0;
    for l in created {
        let l = l.unwrap();
        if l.state == pb::LeadState::Offered as i32 {
            *offered.entry(l.partner).or_default() += 1;
        } else {
            assert_eq!(l.state, pb::LeadState::Unassigned as i32);
            unassigned += 1;
        }
    }
    assert_eq!(
        offered.into_iter().collect::<Vec<_>>(),
        [
            ("partners/n1".to_owned(), 2),
            ("partners/n2".to_owned(), 2),
            ("partners/n3".to_owned(), 2)
        ]
    );
    assert_eq!(unassigned, 14);
}

#[tokio::test]
async fn an_accepted_lead_is_assigned_to_a_rep_of_its_partner_and_shows_on_his_home_screen() {
    const ANNA: &str = "0b0c6a3e-6f5c-4d0e-9a51-000000000a11";
    const BEN: &str = "0b0c6a3e-6f5c-4d0e-9a51-000000000b12";
    let app = spawn_app().await;
    app.active_in("p1", "west").await;
    app.active_in("p2", "east").await;
    let anna = app.rep("p1", ANNA).await.name;
    let ben = app.rep("p2", BEN).await.name;
    let l = app.create_lead(lead("west", BILLION, 3, 3)).await.unwrap();
    assert_eq!(l.partner, "partners/p1");
    let assign = |token: tonic::Request<pb::AssignLeadRequest>| {
        let mut leads = app.leads();
        async move { leads.assign_lead(token).await.map(|r| r.into_inner()) }
    };
    let request = |rep: &str| pb::AssignLeadRequest {
        name: l.name.clone(),
        sales_rep: rep.into(),
    };
    let early = assign(as_partner("p1", request(&anna))).await.unwrap_err();
    assert_eq!(early.code(), Code::FailedPrecondition, "only an accepted lead");
    app.accept("p1", &l.name).await.unwrap();

    let by_rep = assign(as_user("p1", ANNA, request(&anna))).await.unwrap_err();
    assert_eq!(by_rep.code(), Code::PermissionDenied);
    let foreign_rep = assign(as_partner("p1", request(&ben))).await.unwrap_err();
    assert_eq!(violated_fields(&foreign_rep), ["sales_rep"]);
    let other_partner = assign(as_partner("p2", request(&ben))).await.unwrap_err();
    assert_eq!(other_partner.code(), Code::NotFound);
    let bad = assign(as_partner(
        "p1",
        pb::AssignLeadRequest {
            name: "leads/x".into(),
            sales_rep: "reps/1".into(),
        },
    ))
    .await
    .unwrap_err();
    let mut fields = violated_fields(&bad);
    fields.sort();
    assert_eq!(fields, ["name", "sales_rep"]);

    let assigned = assign(as_partner("p1", request(&anna))).await.unwrap();
    assert_eq!(assigned.sales_rep, anna);
    let home = app
        .visits()
        .get_rep_home(as_user(
            "p1",
            ANNA,
            pb::GetRepHomeRequest {
                sales_rep: anna.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<String> = home.assigned_leads.iter().map(|l| l.name.clone()).collect();
    assert_eq!(names, std::slice::from_ref(&l.name));
    assert_eq!(home.open_leads, 1);

    // Taken back: the home screen no longer shows it.
    let unassigned = assign(as_partner("p1", request(""))).await.unwrap();
    assert_eq!(unassigned.sales_rep, "");
    let home = app
        .visits()
        .get_rep_home(as_user("p1", ANNA, pb::GetRepHomeRequest { sales_rep: anna }))
        .await
        .unwrap()
        .into_inner();
    assert!(home.assigned_leads.is_empty());
}
