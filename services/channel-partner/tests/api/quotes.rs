//! Quotes: priced line by line against the brand's range table, issued at once
//! when every line is in range, otherwise held for the brand's approval with the
//! trail kept; accepting places one order (however often or concurrently it is
//! accepted) and wins the opportunity; a partner sees only its own quotes.

use std::sync::atomic::Ordering;

use chrono::Duration;
use retail_kit::convert::timestamp;
use retail_proto::events as ev;
use retail_proto::partner::{self as pb};
use tonic::Code;

use crate::helpers::*;

const LEVEL: &str = "registered";

impl TestApp {
    /// An active partner with an open opportunity for "ACME" in the north.
    async fn quoting_partner(&self, id: &str) -> String {
        self.active_in(id, "north").await;
        self.opportunities()
            .create_opportunity(as_partner(
                id,
                pb::CreateOpportunityRequest {
                    parent: format!("partners/{id}"),
                    opportunity: Some(pb::Opportunity {
                        title: "Pumps for ACME".into(),
                        customer: Some(pb::Customer {
                            display_name: format!("ACME of {id}"),
                            region: "north".into(),
                            tax_id: String::new(),
                        }),
                        amount_minor: 5_000_00,
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .name
    }

    /// The range for class A, new customers, from volume 0: 5% to 20% off.
    async fn standard_range(&self) -> pb::PriceRange {
        self.set_range(0, 500, 2_000).await.unwrap()
    }

    async fn set_range(&self, from: i64, min: i32, max: i32) -> Result<pb::PriceRange, tonic::Status> {
        self.quotes()
            .set_price_range(authed(pb::SetPriceRangeRequest {
                price_range: Some(pb::PriceRange {
                    level: LEVEL.into(),
                    customer_class: pb::CustomerClass::A.into(),
                    relationship: pb::CustomerRelationship::New.into(),
                    volume_from_minor: from,
                    min_discount_bp: min,
                    max_discount_bp: max,
                    ..Default::default()
                }),
            }))
            .await
            .map(|r| r.into_inner())
    }

    async fn quote(
        &self,
        partner: &str,
        opportunity: &str,
        lines: &[(&str, i64, i64)],
    ) -> Result<pb::Quote, tonic::Status> {
        self.quotes()
            .create_quote(as_partner(
                partner,
                pb::CreateQuoteRequest {
                    parent: format!("partners/{partner}"),
                    quote: Some(pb::Quote {
                        opportunity: opportunity.into(),
                        customer_class: pb::CustomerClass::A.into(),
                        relationship: pb::CustomerRelationship::New.into(),
                        expected_volume_minor: 1_000_00,
                        lines: lines
                            .iter()
                            .map(|(sku, quantity, unit)| pb::QuoteLine {
                                sku: format!("skus/{sku}"),
                                quantity: *quantity,
                                unit_price_minor: *unit,
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    async fn accept_as(&self, partner: &str, name: &str) -> Result<pb::Quote, tonic::Status> {
        self.quotes()
            .accept_quote(as_partner(partner, pb::AcceptQuoteRequest { name: name.into() }))
            .await
            .map(|r| r.into_inner())
    }

    async fn stage_of(&self, partner: &str, opportunity: &str) -> pb::PipelineStage {
        let o = self
            .opportunities()
            .get_opportunity(as_partner(
                partner,
                pb::GetOpportunityRequest {
                    name: opportunity.into(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        o.stage()
    }
}

async fn world() -> (TestApp, String) {
    let app = spawn_app().await;
    app.downstream.price(LEVEL, "PUMP-1", 100_00);
    app.downstream.price(LEVEL, "VALVE-2", 40_00);
    let opportunity = app.quoting_partner("p1").await;
    app.standard_range().await;
    (app, opportunity)
}

#[tokio::test]
async fn a_quote_in_range_is_issued_at_once() {
    let (app, opportunity) = world().await;
    // 5-20% off 100.00 is 80.00-95.00; off 40.00, 32.00-38.00.
    let q = app
        .quote("p1", &opportunity, &[("PUMP-1", 3, 80_00), ("VALVE-2", 10, 38_00)])
        .await
        .unwrap();
    assert_eq!(q.state(), pb::QuoteState::Issued);
    assert_eq!(q.partner_level, LEVEL);
    assert!(!q.price_range.is_empty());
    assert_eq!(q.total_minor, 3 * 80_00 + 10 * 38_00);
    assert_eq!(q.currency_code, "EUR");
    let pump = &q.lines[0];
    assert_eq!(
        (
            pump.list_price_minor,
            pump.min_unit_price_minor,
            pump.max_unit_price_minor
        ),
        (100_00, 80_00, 95_00)
    );
    assert!(q.lines.iter().all(|l| l.in_range));
    assert_eq!(q.trail.len(), 1);
    assert_eq!(q.trail[0].action, "issued");
    assert_eq!(q.trail[0].actor, "user-of-p1");
    let events = app.events::<ev::QuoteChanged>(1).await;
    assert_eq!(events[0].change, "issued");
    assert_eq!(events[0].quote, q.name);
    assert_eq!(events[0].total_minor, q.total_minor);
}

#[tokio::test]
async fn the_highest_volume_band_reached_sets_the_range() {
    let (app, opportunity) = world().await;
    // From 1,000.00 expected volume, up to 30% off.
    app.set_range(1_000_00, 500, 3_000).await.unwrap();
    let q = app.quote("p1", &opportunity, &[("PUMP-1", 1, 70_00)]).await.unwrap();
    assert_eq!(q.state(), pb::QuoteState::Issued, "the quote expects 1,000.00");
    // Setting the same key again replaces the row.
    app.set_range(1_000_00, 500, 2_500).await.unwrap();
    let q = app.quote("p1", &opportunity, &[("PUMP-1", 1, 70_00)]).await.unwrap();
    assert_eq!(q.state(), pb::QuoteState::PendingApproval);
    let ranges = app
        .quotes()
        .list_price_ranges(authed(pb::ListPriceRangesRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .price_ranges;
    assert_eq!(ranges.len(), 2);
}

#[tokio::test]
async fn out_of_range_waits_for_the_brand_and_is_not_accepted_before() {
    let (app, opportunity) = world().await;
    // 79.99 is more than 20% off; a price above list is under the least discount.
    let q = app
        .quote("p1", &opportunity, &[("PUMP-1", 2, 79_99), ("VALVE-2", 1, 39_00)])
        .await
        .unwrap();
    assert_eq!(q.state(), pb::QuoteState::PendingApproval);
    assert_eq!(q.trail[0].action, "submitted");
    assert!(!q.lines[0].in_range && !q.lines[1].in_range);

    let refused = app.accept_as("p1", &q.name).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(
        app.downstream.placements.load(Ordering::SeqCst),
        0,
        "nothing was placed"
    );
    assert_eq!(app.downstream.order_count(), 0);

    // The partner cannot approve its own quote.
    let denied = app
        .quotes()
        .approve_quote(as_partner(
            "p1",
            pb::ApproveQuoteRequest {
                name: q.name.clone(),
                reason: "fine".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    let approved = app
        .quotes()
        .approve_quote(authed(pb::ApproveQuoteRequest {
            name: q.name.clone(),
            reason: "strategic account".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(approved.state(), pb::QuoteState::Approved);
    let decision = &approved.trail[1];
    assert_eq!(
        (
            decision.action.as_str(),
            decision.reason.as_str(),
            decision.actor.as_str()
        ),
        ("approved", "strategic account", "staff-1")
    );
    assert!(decision.time.is_some());
    // A second decision is refused.
    let again = app
        .quotes()
        .reject_quote(authed(pb::RejectQuoteRequest {
            name: q.name.clone(),
            reason: "too late".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);

    let accepted = app.accept_as("p1", &q.name).await.unwrap();
    assert_eq!(accepted.state(), pb::QuoteState::Accepted);
    assert!(accepted.order.starts_with("orders/"));
    assert_eq!(accepted.trail.last().unwrap().action, "accepted");
    assert_eq!(app.stage_of("p1", &opportunity).await, pb::PipelineStage::Won);
    let changes: Vec<String> = app
        .events::<ev::QuoteChanged>(3)
        .await
        .into_iter()
        .map(|e| e.change)
        .collect();
    assert_eq!(changes, ["submitted", "approved", "accepted"]);
}

#[tokio::test]
async fn a_rejected_quote_keeps_its_reason_and_is_never_accepted() {
    let (app, opportunity) = world().await;
    let q = app.quote("p1", &opportunity, &[("PUMP-1", 1, 50_00)]).await.unwrap();
    let no_reason = app
        .quotes()
        .reject_quote(authed(pb::RejectQuoteRequest {
            name: q.name.clone(),
            reason: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&no_reason), ["reason"]);
    let rejected = app
        .quotes()
        .reject_quote(authed(pb::RejectQuoteRequest {
            name: q.name.clone(),
            reason: "half price is below cost".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rejected.state(), pb::QuoteState::Rejected);
    assert_eq!(rejected.trail[1].reason, "half price is below cost");
    assert_eq!(
        app.accept_as("p1", &q.name).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    assert_eq!(app.downstream.order_count(), 0);
}

#[tokio::test]
async fn accepting_twice_or_concurrently_places_one_order_with_the_quotes_prices() {
    let (app, opportunity) = world().await;
    let q = app
        .quote("p1", &opportunity, &[("PUMP-1", 3, 85_00), ("VALVE-2", 2, 36_00)])
        .await
        .unwrap();
    let tries = futures::future::join_all((0..6).map(|_| app.accept_as("p1", &q.name))).await;
    let orders: std::collections::HashSet<String> = tries.into_iter().map(|r| r.unwrap().order).collect();
    assert_eq!(orders.len(), 1, "every acceptance answers the same order");
    let again = app.accept_as("p1", &q.name).await.unwrap();
    assert!(orders.contains(&again.order));
    assert_eq!(app.downstream.order_count(), 1);
    let placed = app.downstream.orders.lock().unwrap().values().next().unwrap().1.clone();
    assert_eq!(placed.quote, q.name);
    assert_eq!(placed.partner_id, "p1");
    assert_eq!(placed.customer_name, "ACME of p1");
    assert_eq!(placed.lines, [("PUMP-1".to_owned(), 3), ("VALVE-2".to_owned(), 2)]);
    // One acceptance in the trail and one event, however many tries.
    let got = app
        .quotes()
        .get_quote(as_partner("p1", pb::GetQuoteRequest { name: q.name.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.trail.iter().filter(|t| t.action == "accepted").count(), 1);
    assert_eq!(app.stage_of("p1", &opportunity).await, pb::PipelineStage::Won);
    // A won opportunity is not quoted again.
    let closed = app
        .quote("p1", &opportunity, &[("PUMP-1", 1, 90_00)])
        .await
        .unwrap_err();
    assert_eq!(closed.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn another_partner_neither_sees_nor_accepts_a_quote() {
    let (app, opportunity) = world().await;
    let theirs = app.quoting_partner("p2").await;
    let q = app.quote("p1", &opportunity, &[("PUMP-1", 1, 90_00)]).await.unwrap();
    let mine = app.quote("p2", &theirs, &[("PUMP-1", 1, 90_00)]).await.unwrap();

    let get = app
        .quotes()
        .get_quote(as_partner("p2", pb::GetQuoteRequest { name: q.name.clone() }))
        .await
        .unwrap_err();
    assert_eq!(get.code(), Code::NotFound);
    assert_eq!(app.accept_as("p2", &q.name).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(app.downstream.order_count(), 0);
    // Quoting another partner's opportunity, or for another partner, is NOT_FOUND.
    let elsewhere = opportunity.replace("partners/p1", "partners/p2");
    let other = app.quote("p2", &elsewhere, &[("PUMP-1", 1, 90_00)]).await;
    assert_eq!(other.unwrap_err().code(), Code::NotFound);
    let foreign = app
        .quotes()
        .create_quote(as_partner(
            "p2",
            pb::CreateQuoteRequest {
                parent: "partners/p1".into(),
                quote: Some(pb::Quote {
                    opportunity: opportunity.clone(),
                    customer_class: pb::CustomerClass::A.into(),
                    relationship: pb::CustomerRelationship::New.into(),
                    lines: vec![pb::QuoteLine {
                        sku: "skus/PUMP-1".into(),
                        quantity: 1,
                        unit_price_minor: 90_00,
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::NotFound);

    let list = |partner: &'static str, parent: &'static str| {
        let app = &app;
        async move {
            app.quotes()
                .list_quotes(as_partner(
                    partner,
                    pb::ListQuotesRequest {
                        parent: parent.into(),
                        ..Default::default()
                    },
                ))
                .await
                .map(|r| r.into_inner().quotes)
        }
    };
    let own: Vec<String> = list("p2", "partners/-")
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert_eq!(own, std::slice::from_ref(&mine.name));
    assert_eq!(list("p2", "partners/p1").await.unwrap_err().code(), Code::NotFound);
    let all = app
        .quotes()
        .list_quotes(authed(pb::ListQuotesRequest {
            parent: "partners/-".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .quotes;
    assert_eq!(all.len(), 2, "the brand sees every partner's");
    // Partners do not read the range table.
    let ranges = app
        .quotes()
        .list_price_ranges(as_partner("p1", pb::ListPriceRangesRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(ranges.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn an_expired_quote_is_not_accepted() {
    let (app, opportunity) = world().await;
    let q = app.quote("p1", &opportunity, &[("PUMP-1", 1, 90_00)]).await.unwrap();
    let pending = app.quote("p1", &opportunity, &[("PUMP-1", 1, 10_00)]).await.unwrap();
    app.app.advance_clock(Duration::days(31));
    assert_eq!(
        app.accept_as("p1", &q.name).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    let approve = app
        .quotes()
        .approve_quote(authed(pb::ApproveQuoteRequest {
            name: pending.name.clone(),
            reason: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(approve.code(), Code::FailedPrecondition);
    let expired = app
        .quotes()
        .list_quotes(as_partner(
            "p1",
            pb::ListQuotesRequest {
                parent: "partners/p1".into(),
                state: pb::QuoteState::Expired.into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .quotes;
    assert_eq!(expired.len(), 2);
    assert!(expired.iter().all(|q| q.state() == pb::QuoteState::Expired));
    assert_eq!(app.downstream.order_count(), 0);
}

#[tokio::test]
async fn bad_quotes_and_ranges_name_every_field() {
    let (app, opportunity) = world().await;
    let bad = app
        .quotes()
        .create_quote(as_partner(
            "p1",
            pb::CreateQuoteRequest {
                parent: "partners/p1".into(),
                quote: Some(pb::Quote {
                    opportunity: "opportunities/x".into(),
                    expected_volume_minor: -1,
                    lines: vec![
                        pb::QuoteLine {
                            sku: "PUMP-1".into(),
                            quantity: 0,
                            unit_price_minor: 0,
                            ..Default::default()
                        },
                        pb::QuoteLine {
                            sku: "skus/VALVE-2".into(),
                            quantity: 1,
                            unit_price_minor: 1,
                            ..Default::default()
                        },
                        pb::QuoteLine {
                            sku: "skus/valve-2".into(),
                            quantity: 10_001,
                            unit_price_minor: 1,
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let mut fields = violated_fields(&bad);
    fields.sort();
    assert_eq!(
        fields,
        [
            "quote.customer_class",
            "quote.expected_volume_minor",
            "quote.lines[0].quantity",
            "quote.lines[0].sku",
            "quote.lines[0].unit_price_minor",
            "quote.lines[2].quantity",
            "quote.lines[2].sku",
            "quote.opportunity",
            "quote.relationship",
        ]
    );
    // A SKU not on the level's list, and a validity in the past.
    let unlisted = app.quote("p1", &opportunity, &[("GHOST", 1, 10_00)]).await.unwrap_err();
    assert_eq!(unlisted.code(), Code::FailedPrecondition);
    let past = app
        .quotes()
        .create_quote(as_partner(
            "p1",
            pb::CreateQuoteRequest {
                parent: "partners/p1".into(),
                quote: Some(pb::Quote {
                    opportunity: opportunity.clone(),
                    customer_class: pb::CustomerClass::A.into(),
                    relationship: pb::CustomerRelationship::New.into(),
                    valid_until: Some(timestamp(chrono::Utc::now() - Duration::hours(1))),
                    lines: vec![pb::QuoteLine {
                        sku: "skus/PUMP-1".into(),
                        quantity: 1,
                        unit_price_minor: 90_00,
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&past), ["quote.valid_until"]);

    let range = app
        .quotes()
        .set_price_range(authed(pb::SetPriceRangeRequest {
            price_range: Some(pb::PriceRange {
                level: String::new(),
                volume_from_minor: -5,
                min_discount_bp: 3_000,
                max_discount_bp: 2_000,
                ..Default::default()
            }),
        }))
        .await
        .unwrap_err();
    let mut fields = violated_fields(&range);
    fields.sort();
    assert_eq!(
        fields,
        [
            "price_range.customer_class",
            "price_range.level",
            "price_range.max_discount_bp",
            "price_range.relationship",
            "price_range.volume_from_minor",
        ]
    );
    let unknown_level = app
        .quotes()
        .set_price_range(authed(pb::SetPriceRangeRequest {
            price_range: Some(pb::PriceRange {
                level: "diamond".into(),
                customer_class: pb::CustomerClass::S.into(),
                relationship: pb::CustomerRelationship::Existing.into(),
                ..Default::default()
            }),
        }))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&unknown_level), ["price_range.level"]);
    // Partners do not set ranges.
    let denied = app
        .quotes()
        .set_price_range(as_partner("p1", pb::SetPriceRangeRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn create_quote_is_idempotent_by_request_id() {
    let (app, opportunity) = world().await;
    let request = pb::CreateQuoteRequest {
        parent: "partners/p1".into(),
        quote: Some(pb::Quote {
            opportunity: opportunity.clone(),
            customer_class: pb::CustomerClass::A.into(),
            relationship: pb::CustomerRelationship::New.into(),
            lines: vec![pb::QuoteLine {
                sku: "skus/PUMP-1".into(),
                quantity: 1,
                unit_price_minor: 90_00,
                ..Default::default()
            }],
            ..Default::default()
        }),
        request_id: "q-1".into(),
    };
    let first = app
        .quotes()
        .create_quote(as_partner("p1", request.clone()))
        .await
        .unwrap()
        .into_inner();
    let second = app
        .quotes()
        .create_quote(as_partner("p1", request))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.name, second.name);
}
