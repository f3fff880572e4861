//! Channel-partner's own integration tests: the gRPC server on port 0 against a
//! fresh database (PostgreSQL when `RETAIL_TEST_DATABASE_URL` is set).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose
// Amounts in minor units are written major_minor (100_00 = 100.00).
#![allow(clippy::inconsistent_digit_grouping)]

mod deals;
mod helpers;
mod leads;
mod ledger_props;
mod pipeline;
mod policy;
mod quotes;
mod sales;
mod visits;

use helpers::*;
use retail_proto::partner::{self as pb};
use tonic::Code;

#[tokio::test]
async fn a_registered_partner_is_applied_at_the_lowest_level_and_listed() {
    let app = spawn_app().await;
    let created = app.create("acme").await.unwrap();
    assert_eq!(created.name, "partners/acme");
    assert_eq!(created.state, pb::PartnerState::Applied as i32);
    assert_eq!(created.level, "registered");
    assert_eq!(created.r#type, pb::PartnerType::Dealer as i32);
    let got = app
        .client()
        .get_partner(authed(pb::GetPartnerRequest {
            name: "partners/acme".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, created);
    let again = app.create("acme").await.unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);
    app.create("bolt").await.unwrap();
    let listed = app
        .client()
        .list_partners(authed(pb::ListPartnersRequest {
            page_size: 1,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.partners.len(), 1);
    assert_eq!(listed.partners[0].name, "partners/acme");
    let rest = app
        .client()
        .list_partners(authed(pb::ListPartnersRequest {
            page_size: 1,
            page_token: listed.next_page_token,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.partners[0].name, "partners/bolt");
    assert!(rest.next_page_token.is_empty());
}

#[tokio::test]
async fn a_bad_registration_names_every_field_and_writes_nothing() {
    let app = spawn_app().await;
    let err = app
        .client()
        .create_partner(authed(pb::CreatePartnerRequest {
            partner: Some(pb::Partner::default()),
            partner_id: "not an id".into(),
            request_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut fields = violated_fields(&err);
    fields.sort();
    assert_eq!(
        fields,
        ["partner.display_name", "partner.region", "partner.type", "partner_id"]
    );
    let listed = app
        .client()
        .list_partners(authed(pb::ListPartnersRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.partners.is_empty());
}

#[tokio::test]
async fn every_status_change_is_audited_and_the_machine_refuses_other_moves() {
    let app = spawn_app().await;
    app.create("acme").await.unwrap();
    let change = |to: &'static str, reason: &'static str| {
        let mut client = app.client();
        async move {
            let (name, reason) = ("partners/acme".to_owned(), reason.to_owned());
            match to {
                "active" => {
                    client
                        .activate_partner(authed(pb::ActivatePartnerRequest { name, reason }))
                        .await
                }
                "suspended" => {
                    client
                        .suspend_partner(authed(pb::SuspendPartnerRequest { name, reason }))
                        .await
                }
                _ => {
                    client
                        .terminate_partner(authed(pb::TerminatePartnerRequest { name, reason }))
                        .await
                }
            }
            .map(|r| r.into_inner())
        }
    };
    let err = change("suspended", "late payments").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "an applicant cannot be suspended");
    let err = change("active", "").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["reason"]);
    assert_eq!(
        change("active", "contract signed").await.unwrap().state,
        pb::PartnerState::Active as i32
    );
    assert_eq!(
        change("suspended", "late payments").await.unwrap().state,
        pb::PartnerState::Suspended as i32
    );
    assert_eq!(
        change("active", "paid up").await.unwrap().state,
        pb::PartnerState::Active as i32
    );
    assert_eq!(
        change("terminated", "contract ended").await.unwrap().state,
        pb::PartnerState::Terminated as i32
    );
    let err = change("active", "second chance").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "terminated is final");

    // A partner cannot change its own status.
    let err = app
        .client()
        .suspend_partner(as_partner(
            "acme",
            pb::SuspendPartnerRequest {
                name: "partners/acme".into(),
                reason: "x".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    let trail = app
        .client()
        .list_status_changes(authed(pb::ListStatusChangesRequest {
            parent: "partners/acme".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .status_changes;
    let seen: Vec<_> = trail
        .iter()
        .map(|c| (c.to_state, c.reason.as_str(), c.actor.as_str()))
        .collect();
    use pb::PartnerState as S;
    assert_eq!(
        seen,
        [
            (S::Applied as i32, "registered", "staff-1"),
            (S::Active as i32, "contract signed", "staff-1"),
            (S::Suspended as i32, "late payments", "staff-1"),
            (S::Active as i32, "paid up", "staff-1"),
            (S::Terminated as i32, "contract ended", "staff-1"),
        ]
    );
    assert_eq!(trail[2].from_state, S::Active as i32);
}

/// Two partners, each with a rep, a target, points and a redemption: a partner
/// principal sees and changes only its own; everything of the other is NOT_FOUND.
#[tokio::test]
async fn a_partner_sees_and_changes_only_its_own_organisation_reps_targets_points_and_redemptions() {
    let app = spawn_app().await;
    app.active("acme").await;
    app.active("bolt").await;
    let acme_rep = app.rep("acme", "0190f5b2-8d3e-7c41-9a6b-00000000000a").await;
    let bolt_rep = app.rep("bolt", "0190f5b2-8d3e-7c41-9a6b-00000000000b").await;
    let brand_rep = app.rep("", "0190f5b2-8d3e-7c41-9a6b-00000000000c").await;
    assert!(brand_rep.partner.is_empty());
    let acme_target = app
        .target("partners/acme", pb::PeriodKind::Month, "2026-12-01", 10_000)
        .await
        .unwrap();
    let bolt_target = app
        .target("partners/bolt", pb::PeriodKind::Month, "2026-12-01", 10_000)
        .await
        .unwrap();
    let bolt_rep_target = app
        .target(&bolt_rep.name, pb::PeriodKind::Month, "2026-12-01", 10_000)
        .await
        .unwrap();
    let item = app
        .incentives()
        .create_catalog_item(authed(pb::CreateCatalogItemRequest {
            catalog_item: Some(pb::CatalogItem {
                category: pb::CatalogCategory::Training as i32,
                display_name: "Installer course".into(),
                points_price: 100,
                unlimited_stock: true,
                ..Default::default()
            }),
        }))
        .await
        .unwrap()
        .into_inner();
    for ledger in ["partners/acme/ledger", "partners/bolt/ledger"] {
        app.incentives()
            .record_action(authed(pb::RecordActionRequest {
                parent: ledger.into(),
                action: "registered_deal_won".into(),
                reference: "deal-1".into(),
            }))
            .await
            .unwrap();
    }
    let redeem = |who: Option<&'static str>, ledger: &'static str| {
        let mut client = app.incentives();
        let item = item.name.clone();
        async move {
            let body = pb::RequestRedemptionRequest {
                parent: ledger.into(),
                redemption: Some(pb::Redemption {
                    catalog_item: item,
                    quantity: 1,
                    ..Default::default()
                }),
                request_id: String::new(),
            };
            let req = match who {
                Some(p) => as_partner(p, body),
                None => authed(body),
            };
            client.request_redemption(req).await.map(|r| r.into_inner())
        }
    };
    let bolt_redemption = redeem(None, "partners/bolt/ledger").await.unwrap();
    let own = redeem(Some("acme"), "partners/acme/ledger").await.unwrap();
    assert!(own.name.starts_with("partners/acme/ledger/redemptions/"));

    let not_found = |r: Result<(), tonic::Status>, what: &str| {
        let err = r.expect_err(what);
        assert_eq!(err.code(), Code::NotFound, "{what}: {err:?}");
    };
    let mut partners = app.client();
    let mut targets = app.targets();
    let mut incentives = app.incentives();
    fn ok<T>(_: T) {}
    not_found(
        partners
            .get_partner(as_partner(
                "acme",
                pb::GetPartnerRequest {
                    name: "partners/bolt".into(),
                },
            ))
            .await
            .map(ok),
        "the other partner",
    );
    not_found(
        partners
            .list_status_changes(as_partner(
                "acme",
                pb::ListStatusChangesRequest {
                    parent: "partners/bolt".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(ok),
        "the other's status trail",
    );
    not_found(
        partners
            .get_sales_rep(as_partner(
                "acme",
                pb::GetSalesRepRequest {
                    name: bolt_rep.name.clone(),
                },
            ))
            .await
            .map(ok),
        "the other's rep",
    );
    not_found(
        partners
            .get_sales_rep(as_partner(
                "acme",
                pb::GetSalesRepRequest {
                    name: brand_rep.name.clone(),
                },
            ))
            .await
            .map(ok),
        "the brand's rep",
    );
    not_found(
        partners
            .create_sales_rep(as_partner(
                "acme",
                pb::CreateSalesRepRequest {
                    sales_rep: Some(pb::SalesRep {
                        partner: "partners/bolt".into(),
                        user_id: "0190f5b2-8d3e-7c41-9a6b-00000000000d".into(),
                        display_name: "Mole".into(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .map(ok),
        "a rep for the other",
    );
    not_found(
        targets
            .get_target(as_partner(
                "acme",
                pb::GetTargetRequest {
                    name: bolt_target.name.clone(),
                },
            ))
            .await
            .map(ok),
        "the other's target",
    );
    not_found(
        targets
            .get_target(as_partner(
                "acme",
                pb::GetTargetRequest {
                    name: bolt_rep_target.name.clone(),
                },
            ))
            .await
            .map(ok),
        "the other's rep's target",
    );
    not_found(
        incentives
            .get_ledger(as_partner(
                "acme",
                pb::GetLedgerRequest {
                    name: "partners/bolt/ledger".into(),
                },
            ))
            .await
            .map(ok),
        "the other's ledger",
    );
    not_found(
        incentives
            .get_ledger(as_partner(
                "acme",
                pb::GetLedgerRequest {
                    name: format!("{}/ledger", bolt_rep.name),
                },
            ))
            .await
            .map(ok),
        "the other's rep's ledger",
    );
    not_found(
        incentives
            .list_ledger_entries(as_partner(
                "acme",
                pb::ListLedgerEntriesRequest {
                    parent: "partners/bolt/ledger".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(ok),
        "the other's entries",
    );
    not_found(
        redeem(Some("acme"), "partners/bolt/ledger").await.map(|_| ()),
        "redeeming the other's points",
    );
    not_found(
        incentives
            .get_redemption(as_partner(
                "acme",
                pb::GetRedemptionRequest {
                    name: bolt_redemption.name.clone(),
                },
            ))
            .await
            .map(ok),
        "the other's redemption",
    );
    let forged = bolt_redemption.name.replace("partners/bolt", "partners/acme");
    not_found(
        incentives
            .get_redemption(as_partner("acme", pb::GetRedemptionRequest { name: forged }))
            .await
            .map(ok),
        "the other's redemption under the own ledger's name",
    );

    // Lists hold only the own.
    let listed = partners
        .list_partners(as_partner("acme", pb::ListPartnersRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed.partners.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["partners/acme"]
    );
    let reps = partners
        .list_sales_reps(as_partner("acme", pb::ListSalesRepsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reps.sales_reps, std::slice::from_ref(&acme_rep));
    let reps = partners
        .list_sales_reps(as_partner(
            "acme",
            pb::ListSalesRepsRequest {
                partner: "partners/bolt".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(reps.sales_reps.is_empty());
    let listed = targets
        .list_targets(as_partner("acme", pb::ListTargetsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed.targets.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        [acme_target.name.as_str()]
    );
    // The own is readable, and the ranking still counts the other's target.
    let mine = targets
        .get_target(as_partner(
            "acme",
            pb::GetTargetRequest {
                name: acme_target.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mine.peer_count, 2);

    // The brand decides; a partner cannot.
    let err = incentives
        .approve_redemption(as_partner(
            "acme",
            pb::ApproveRedemptionRequest {
                name: own.name.clone(),
                reason: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let ledger = app.ledger("partners/bolt/ledger").await;
    assert_eq!(ledger.balance, 500 - 100, "acme's attempts left bolt's ledger alone");
}

#[tokio::test]
async fn targets_refuse_overlapping_periods_and_bad_input_and_write_nothing() {
    let app = spawn_app().await;
    app.active("acme").await;
    let q4 = app
        .target("partners/acme", pb::PeriodKind::Quarter, "2026-10-01", 90_000)
        .await
        .unwrap();
    assert_eq!(q4.period_start, "2026-10-01");
    assert_eq!(q4.currency_code, "EUR");
    for (kind, start) in [
        (pb::PeriodKind::Month, "2026-11-01"),
        (pb::PeriodKind::Quarter, "2026-10-01"),
        (pb::PeriodKind::Year, "2026-01-01"),
    ] {
        let err = app.target("partners/acme", kind, start, 10_000).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{kind:?} {start}");
        assert!(err.message().contains(&q4.name), "{err:?}");
    }
    // The next month is free.
    app.target("partners/acme", pb::PeriodKind::Month, "2027-01-01", 30_000)
        .await
        .unwrap();
    let err = app
        .target("partners/acme", pb::PeriodKind::Quarter, "2027-02-01", -5)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut fields = violated_fields(&err);
    fields.sort();
    assert_eq!(fields, ["target.amount_minor", "target.period_start"]);
    let err = app
        .target("members/x", pb::PeriodKind::Unspecified, "", 1)
        .await
        .unwrap_err();
    let mut fields = violated_fields(&err);
    fields.sort();
    assert_eq!(fields, ["target.period_kind", "target.subject"]);
    let err = app
        .target("partners/ghost", pb::PeriodKind::Month, "2027-03-01", 1)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "an unknown partner");
    let listed = app
        .targets()
        .list_targets(authed(pb::ListTargetsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.targets.len(), 2);
}

/// Racing creations of overlapping targets: exactly one wins.
#[tokio::test]
async fn of_racing_overlapping_targets_exactly_one_is_set() {
    let app = spawn_app().await;
    app.active("acme").await;
    let starts = ["2026-10-01", "2026-11-01", "2026-12-01"];
    let results = futures::future::join_all(starts.iter().enumerate().map(|(i, start)| {
        let kind = if i == 0 {
            pb::PeriodKind::Quarter
        } else {
            pb::PeriodKind::Month
        };
        app.target("partners/acme", kind, start, 1_000)
    }))
    .await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert!(won >= 1, "{results:?}");
    let listed = app
        .targets()
        .list_targets(authed(pb::ListTargetsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    // The months do not overlap each other, only the quarter: either the quarter
    // alone or the two months.
    let kinds: Vec<_> = listed.targets.iter().map(|t| t.period_kind).collect();
    assert!(
        kinds == [pb::PeriodKind::Quarter as i32] || kinds == [pb::PeriodKind::Month as i32; 2],
        "{kinds:?}"
    );
}

#[tokio::test]
async fn redemptions_take_points_and_stock_and_a_rejection_gives_both_back() {
    let app = spawn_app().await;
    app.active("acme").await;
    let rep = app.rep("acme", "0190f5b2-8d3e-7c41-9a6b-00000000000a").await;
    let mut inc = app.incentives();
    let item = |category: pb::CatalogCategory, price: i64, stock: i64| pb::CreateCatalogItemRequest {
        catalog_item: Some(pb::CatalogItem {
            category: category as i32,
            display_name: format!("{category:?}"),
            points_price: price,
            stock,
            ..Default::default()
        }),
    };
    let demo = inc
        .create_catalog_item(authed(item(pb::CatalogCategory::DemoUnit, 150, 2)))
        .await
        .unwrap()
        .into_inner();
    let gift = inc
        .create_catalog_item(authed(item(pb::CatalogCategory::Gift, 10, 5)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(demo.ledger_kind, pb::LedgerKind::Collective as i32);
    let err = inc
        .create_catalog_item(authed(item(pb::CatalogCategory::Unspecified, 0, -1)))
        .await
        .unwrap_err();
    let mut fields = violated_fields(&err);
    fields.sort();
    assert_eq!(
        fields,
        [
            "catalog_item.category",
            "catalog_item.points_price",
            "catalog_item.stock"
        ]
    );
    inc.record_action(authed(pb::RecordActionRequest {
        parent: "partners/acme/ledger".into(),
        action: "registered_deal_won".into(),
        reference: "deal-7".into(),
    }))
    .await
    .unwrap();
    let again = inc
        .record_action(authed(pb::RecordActionRequest {
            parent: "partners/acme/ledger".into(),
            action: "registered_deal_won".into(),
            reference: "deal-7".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(
        again.code(),
        Code::FailedPrecondition,
        "each action reference counts once"
    );
    let unknown = inc
        .record_action(authed(pb::RecordActionRequest {
            parent: "partners/acme/ledger".into(),
            action: "won_the_lottery".into(),
            reference: "x".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&unknown), ["action"]);
    assert_eq!(app.ledger("partners/acme/ledger").await.balance, 500);

    let request =
        |ledger: &str, item: &pb::CatalogItem, quantity: i64, request_id: &str| pb::RequestRedemptionRequest {
            parent: ledger.into(),
            redemption: Some(pb::Redemption {
                catalog_item: item.name.clone(),
                quantity,
                ..Default::default()
            }),
            request_id: request_id.into(),
        };
    let err = inc
        .request_redemption(authed(request("partners/acme/ledger", &gift, 1, "")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "a gift is for individual ledgers");
    let err = inc
        .request_redemption(authed(request("partners/acme/ledger", &demo, 4, "")))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "more than the balance (and the stock)"
    );
    let err = inc
        .request_redemption(authed(request(&format!("{}/ledger", rep.name), &gift, 1, "")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "the rep has no points");
    let err = inc
        .request_redemption(authed(request("partners/acme/ledger", &demo, 0, "")))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["redemption.quantity"]);

    let first = inc
        .request_redemption(authed(request("partners/acme/ledger", &demo, 2, "r-1")))
        .await
        .unwrap()
        .into_inner();
    let replay = inc
        .request_redemption(authed(request("partners/acme/ledger", &demo, 2, "r-1")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, replay, "the same request id answers the same redemption");
    assert_eq!(first.points, 300);
    assert_eq!(first.state, pb::RedemptionState::Requested as i32);
    assert_eq!(app.ledger("partners/acme/ledger").await.balance, 200);
    let stock = |items: Vec<pb::CatalogItem>| items.into_iter().find(|i| i.name == demo.name).map(|i| i.stock);
    let items = inc
        .list_catalog_items(authed(pb::ListCatalogItemsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stock(items.catalog_items), Some(0));
    let err = inc
        .request_redemption(authed(request("partners/acme/ledger", &demo, 1, "")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "out of stock");

    let err = inc
        .fulfill_redemption(authed(pb::FulfillRedemptionRequest {
            name: first.name.clone(),
            reason: "".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "only an approved one is fulfilled"
    );
    let err = inc
        .reject_redemption(authed(pb::RejectRedemptionRequest {
            name: first.name.clone(),
            reason: "".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["reason"], "a rejection says why");
    let approved = inc
        .approve_redemption(authed(pb::ApproveRedemptionRequest {
            name: first.name.clone(),
            reason: "".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(approved.state, pb::RedemptionState::Approved as i32);
    let rejected = inc
        .reject_redemption(authed(pb::RejectRedemptionRequest {
            name: first.name.clone(),
            reason: "discontinued".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rejected.state, pb::RedemptionState::Rejected as i32);
    assert_eq!(rejected.reason, "discontinued");
    assert_eq!(
        app.ledger("partners/acme/ledger").await.balance,
        500,
        "the points came back"
    );
    let items = inc
        .list_catalog_items(authed(pb::ListCatalogItemsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stock(items.catalog_items), Some(2), "and the stock");
    let err = inc
        .approve_redemption(authed(pb::ApproveRedemptionRequest {
            name: first.name.clone(),
            reason: "".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "rejected is final");

    let second = inc
        .request_redemption(authed(request("partners/acme/ledger", &demo, 1, "")))
        .await
        .unwrap()
        .into_inner();
    inc.approve_redemption(authed(pb::ApproveRedemptionRequest {
        name: second.name.clone(),
        reason: "".into(),
    }))
    .await
    .unwrap();
    let done = inc
        .fulfill_redemption(authed(pb::FulfillRedemptionRequest {
            name: second.name.clone(),
            reason: "".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.state, pb::RedemptionState::Fulfilled as i32);
    let entries = inc
        .list_ledger_entries(authed(pb::ListLedgerEntriesRequest {
            parent: "partners/acme/ledger".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .entries;
    let kinds: Vec<_> = entries.iter().map(|e| (e.kind.as_str(), e.points)).collect();
    assert_eq!(
        kinds,
        [("action", 500), ("redeem", -300), ("return", 300), ("redeem", -150)]
    );
    assert_eq!(
        app.ledger("partners/acme/ledger").await.balance,
        entries.iter().map(|e| e.points).sum::<i64>()
    );
}

#[tokio::test]
async fn a_suspended_partner_cannot_redeem_and_a_partner_registers_only_its_own_reps() {
    let app = spawn_app().await;
    app.active("acme").await;
    let mut partners = app.client();
    let own = partners
        .create_sales_rep(as_partner(
            "acme",
            pb::CreateSalesRepRequest {
                sales_rep: Some(pb::SalesRep {
                    partner: "partners/acme".into(),
                    user_id: "0190f5b2-8d3e-7c41-9a6b-00000000000a".into(),
                    display_name: "Ann".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.partner, "partners/acme");
    let err = partners
        .create_sales_rep(authed(pb::CreateSalesRepRequest {
            sales_rep: Some(pb::SalesRep {
                partner: "partners/acme".into(),
                user_id: "0190f5b2-8d3e-7c41-9a6b-00000000000a".into(),
                display_name: "Ann again".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "one rep per identity user");
    let err = partners
        .create_sales_rep(as_partner(
            "acme",
            pb::CreateSalesRepRequest {
                sales_rep: Some(pb::SalesRep {
                    user_id: "0190f5b2-8d3e-7c41-9a6b-00000000000e".into(),
                    display_name: "Brand".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "the brand registers its own reps");
    let err = partners
        .create_sales_rep(authed(pb::CreateSalesRepRequest {
            sales_rep: Some(pb::SalesRep {
                partner: "partners/ghost".into(),
                user_id: "not-a-uuid".into(),
                display_name: String::new(),
                ..Default::default()
            }),
            request_id: String::new(),
        }))
        .await
        .unwrap_err();
    let mut fields = violated_fields(&err);
    fields.sort();
    assert_eq!(fields, ["sales_rep.display_name", "sales_rep.user_id"]);

    let mut inc = app.incentives();
    let item = inc
        .create_catalog_item(authed(pb::CreateCatalogItemRequest {
            catalog_item: Some(pb::CatalogItem {
                category: pb::CatalogCategory::Rebate as i32,
                display_name: "Rebate".into(),
                points_price: 1,
                unlimited_stock: true,
                ..Default::default()
            }),
        }))
        .await
        .unwrap()
        .into_inner();
    inc.record_action(authed(pb::RecordActionRequest {
        parent: "partners/acme/ledger".into(),
        action: "training_completed".into(),
        reference: "course-1".into(),
    }))
    .await
    .unwrap();
    partners
        .suspend_partner(authed(pb::SuspendPartnerRequest {
            name: "partners/acme".into(),
            reason: "audit".into(),
        }))
        .await
        .unwrap();
    let err = inc
        .request_redemption(as_partner(
            "acme",
            pb::RequestRedemptionRequest {
                parent: "partners/acme/ledger".into(),
                redemption: Some(pb::Redemption {
                    catalog_item: item.name.clone(),
                    quantity: 1,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(app.ledger("partners/acme/ledger").await.balance, 200);
}

/// Racing redemptions that together exceed the balance: exactly one wins, and the
/// balance never goes below zero.
#[tokio::test]
async fn of_racing_redemptions_over_the_balance_exactly_one_takes_the_points() {
    let app = spawn_app().await;
    app.active("acme").await;
    let mut inc = app.incentives();
    inc.record_action(authed(pb::RecordActionRequest {
        parent: "partners/acme/ledger".into(),
        action: "registered_deal_won".into(),
        reference: "deal-1".into(),
    }))
    .await
    .unwrap();
    let item = inc
        .create_catalog_item(authed(pb::CreateCatalogItemRequest {
            catalog_item: Some(pb::CatalogItem {
                category: pb::CatalogCategory::Rebate as i32,
                display_name: "Rebate".into(),
                points_price: 300,
                unlimited_stock: true,
                ..Default::default()
            }),
        }))
        .await
        .unwrap()
        .into_inner();
    let results = futures::future::join_all((0..6).map(|i| {
        let mut inc = app.incentives();
        let item = item.name.clone();
        async move {
            inc.request_redemption(as_partner(
                "acme",
                pb::RequestRedemptionRequest {
                    parent: "partners/acme/ledger".into(),
                    redemption: Some(pb::Redemption {
                        catalog_item: item,
                        quantity: 1,
                        ..Default::default()
                    }),
                    request_id: format!("race-{i}"),
                },
            ))
            .await
        }
    }))
    .await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "{results:?}");
    for lost in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(
            matches!(lost.code(), Code::FailedPrecondition | Code::Aborted),
            "{lost:?}"
        );
    }
    let ledger = app.ledger("partners/acme/ledger").await;
    assert_eq!((ledger.balance, ledger.debt), (200, 0));
}
