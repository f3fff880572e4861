//! Prices: list prices, promotions, tier discounts, partner price lists, quotes and
//! competitor alerts.

use chrono::{Duration, Utc};
use retail_kit::convert::timestamp;
use retail_proto::catalog::{self as pb};
use retail_proto::common::Money;
use tonic::Code;

use crate::helpers::*;

fn eur(amount_minor: i64) -> Option<Money> {
    Some(Money {
        currency_code: "EUR".into(),
        amount_minor,
    })
}

async fn list_price(app: &TestApp, sku: &str, amount: i64) {
    app.pricing()
        .set_list_price(authed(pb::SetListPriceRequest {
            sku: format!("skus/{sku}"),
            price: eur(amount),
        }))
        .await
        .unwrap();
}

async fn promotion(
    app: &TestApp,
    skus: &[&str],
    bp: u32,
    from: chrono::DateTime<Utc>,
    to: chrono::DateTime<Utc>,
) -> pb::Promotion {
    app.pricing()
        .create_promotion(authed(pb::CreatePromotionRequest {
            promotion: Some(pb::Promotion {
                display_name: format!("{bp} off"),
                skus: skus.iter().map(|s| format!("skus/{s}")).collect(),
                discount_bp: bp,
                start_time: Some(timestamp(from)),
                end_time: Some(timestamp(to)),
                ..Default::default()
            }),
            request_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
}

fn quote_request(
    channel: pb::SalesChannel,
    tier: &str,
    at: chrono::DateTime<Utc>,
    lines: &[(&str, i64)],
) -> pb::QuotePricesRequest {
    pb::QuotePricesRequest {
        channel: channel as i32,
        currency_code: "EUR".into(),
        member_tier: tier.into(),
        partner_level: String::new(),
        price_time: Some(timestamp(at)),
        lines: lines
            .iter()
            .map(|(s, q)| pb::QuoteLine {
                sku: format!("skus/{s}"),
                quantity: *q,
            })
            .collect(),
        ..Default::default()
    }
}

/// The unit price of one unit of `sku` quoted for `tier` on `channel` at `at`.
async fn unit_price(app: &TestApp, channel: pb::SalesChannel, tier: &str, at: chrono::DateTime<Utc>, sku: &str) -> i64 {
    app.pricing()
        .quote_prices(authed(quote_request(channel, tier, at, &[(sku, 1)])))
        .await
        .unwrap()
        .into_inner()
        .lines[0]
        .unit_price
        .as_ref()
        .unwrap()
        .amount_minor
}

#[tokio::test]
async fn a_consumer_price_is_the_same_on_every_consumer_channel_for_every_caller() {
    let app = spawn_app().await;
    app.skus(&["Q-1", "Q-2"]).await;
    list_price(&app, "Q-1", 9_999).await;
    list_price(&app, "Q-2", 5_000).await;
    let now = Utc::now();
    promotion(&app, &["Q-1"], 2_000, now - Duration::days(1), now + Duration::days(1)).await;
    // A smaller promotion on every SKU: the larger one wins for Q-1.
    promotion(&app, &[], 1_000, now - Duration::days(1), now + Duration::days(1)).await;
    app.pricing()
        .set_tier_discount(authed(pb::SetTierDiscountRequest {
            tier_discount: Some(pb::TierDiscount {
                tier: "gold".into(),
                discount_bp: 500,
            }),
        }))
        .await
        .unwrap();

    let lines = [("Q-1", 2), ("Q-2", 1)];
    let callers = [admin(), staff_token(&["catalog.read"])];
    let mut quotes = Vec::new();
    for channel in [pb::SalesChannel::Store, pb::SalesChannel::Online, pb::SalesChannel::App] {
        for caller in &callers {
            let q = app
                .pricing()
                .quote_prices(with_token(caller, quote_request(channel, "gold", now, &lines)))
                .await
                .unwrap()
                .into_inner();
            quotes.push(q);
        }
    }
    assert!(
        quotes.windows(2).all(|w| w[0] == w[1]),
        "every consumer channel and caller: same price"
    );
    let q = &quotes[0];
    // 99.99 - 20 % (19.99) = 80.00, - 5 % gold (4.00) = 76.00.
    assert_eq!(q.lines[0].unit_price, eur(7_600));
    assert_eq!(q.lines[0].line_total, eur(15_200));
    let kinds: Vec<_> = q.lines[0].applied_rules.iter().map(|r| r.kind).collect();
    use pb::applied_rule::Kind;
    assert_eq!(
        kinds,
        [
            Kind::ListPrice as i32,
            Kind::Promotion as i32,
            Kind::TierDiscount as i32
        ]
    );
    let amounts: Vec<_> = q.lines[0]
        .applied_rules
        .iter()
        .map(|r| r.unit_amount.as_ref().unwrap().amount_minor)
        .collect();
    assert_eq!(amounts, [9_999, -1_999, -400]);
    // 50.00 - 10 % = 45.00, - 5 % = 42.75.
    assert_eq!(q.lines[1].unit_price, eur(4_275));
    assert_eq!(q.total, eur(15_200 + 4_275));

    // A guest pays the promoted price without the tier discount.
    let guest = app
        .pricing()
        .quote_prices(authed(quote_request(pb::SalesChannel::Online, "", now, &lines)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(guest.lines[0].unit_price, eur(8_000));
}

#[tokio::test]
async fn promotions_apply_only_inside_their_window() {
    let app = spawn_app().await;
    app.skus(&["W-1"]).await;
    list_price(&app, "W-1", 10_000).await;
    let start = Utc::now() + Duration::days(10);
    let end = start + Duration::days(2);
    let promo = promotion(&app, &["W-1"], 3_000, start, end).await;
    let price_at = |at| unit_price(&app, pb::SalesChannel::App, "", at, "W-1");
    assert_eq!(price_at(start - Duration::seconds(1)).await, 10_000);
    assert_eq!(price_at(start).await, 7_000);
    assert_eq!(price_at(end - Duration::seconds(1)).await, 7_000);
    assert_eq!(price_at(end).await, 10_000);
    // Ending it now removes it from every later time.
    app.pricing()
        .end_promotion(authed(pb::EndPromotionRequest { name: promo.name }))
        .await
        .unwrap();
    assert_eq!(price_at(start).await, 10_000);
}

/// Quotes are served from the price cache once it is warm; every kind of price
/// change made through the API shows in the very next quote.
#[tokio::test]
async fn a_quote_shows_every_price_change_at_once() {
    let app = spawn_app().await;
    app.skus(&["C-1"]).await;
    list_price(&app, "C-1", 10_000).await;
    // Ahead of now, so the cached rules (loaded now) serve it.
    let at = Utc::now() + Duration::minutes(5);
    let unit = || unit_price(&app, pb::SalesChannel::Online, "gold", at, "C-1");
    // Warm the cache. The catalog log's follower drops it once more when the list
    // price set above reaches it, so quote until the rules stay.
    let mut warm = false;
    for _ in 0..250 {
        assert_eq!(unit().await, 10_000);
        if app.state.prices.rules(at).is_some() {
            warm = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(warm, "the price rules are cached");
    assert_eq!(unit().await, 10_000);

    list_price(&app, "C-1", 8_000).await;
    assert_eq!(unit().await, 8_000, "a new list price");

    let tier = |bp: u32| {
        let mut p = app.pricing();
        async move {
            p.set_tier_discount(authed(pb::SetTierDiscountRequest {
                tier_discount: Some(pb::TierDiscount {
                    tier: "gold".into(),
                    discount_bp: bp,
                }),
            }))
            .await
            .unwrap();
        }
    };
    tier(1_000).await;
    assert_eq!(unit().await, 7_200, "a new tier discount");

    let now = Utc::now();
    let promo = promotion(&app, &["C-1"], 5_000, now - Duration::hours(1), now + Duration::days(1)).await;
    // 80.00 - 50 % = 40.00, - 10 % gold = 36.00.
    assert_eq!(unit().await, 3_600, "a new promotion");
    app.pricing()
        .end_promotion(authed(pb::EndPromotionRequest { name: promo.name }))
        .await
        .unwrap();
    assert_eq!(unit().await, 7_200, "an ended promotion");
    tier(500).await;
    assert_eq!(unit().await, 7_600, "a changed tier discount");
}

#[tokio::test]
async fn partners_are_quoted_from_their_level_price_list() {
    let app = spawn_app().await;
    app.skus(&["P-1", "P-2"]).await;
    list_price(&app, "P-1", 10_000).await;
    let now = Utc::now();
    promotion(&app, &[], 5_000, now - Duration::days(1), now + Duration::days(1)).await;
    for (level, price) in [("gold", 5_500), ("silver", 6_000)] {
        app.pricing()
            .set_partner_price(authed(pb::SetPartnerPriceRequest {
                partner_price: Some(pb::PartnerPrice {
                    partner_level: level.into(),
                    sku: "skus/P-1".into(),
                    price: eur(price),
                }),
            }))
            .await
            .unwrap();
    }
    let partner = |level: &str, sku: &str| pb::QuotePricesRequest {
        channel: pb::SalesChannel::Partner as i32,
        currency_code: "EUR".into(),
        member_tier: String::new(),
        partner_level: level.into(),
        price_time: None,
        lines: vec![pb::QuoteLine {
            sku: format!("skus/{sku}"),
            quantity: 10,
        }],
        ..Default::default()
    };
    let gold = app
        .pricing()
        .quote_prices(authed(partner("gold", "P-1")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(gold.lines[0].unit_price, eur(5_500));
    assert_eq!(
        gold.lines[0].applied_rules.len(),
        1,
        "no consumer promotion for partners"
    );
    assert_eq!(gold.lines[0].applied_rules[0].reference, "gold");
    let silver = app
        .pricing()
        .quote_prices(authed(partner("silver", "P-1")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(silver.total, eur(60_000));
    let err = app
        .pricing()
        .quote_prices(authed(partner("gold", "P-2")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let err = app
        .pricing()
        .quote_prices(authed(partner("", "P-1")))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["partner_level"]);
}

#[tokio::test]
async fn a_competitor_undercutting_beyond_the_threshold_raises_an_alert() {
    let app = spawn_app().await;
    app.skus(&["C-1", "C-2"]).await;
    list_price(&app, "C-1", 10_000).await;
    list_price(&app, "C-2", 10_000).await;
    let observe = |sku: &str, source: &str, price: i64| pb::RecordCompetitorPriceRequest {
        observation: Some(pb::CompetitorPrice {
            sku: format!("skus/{sku}"),
            source: source.into(),
            price: eur(price),
            ..Default::default()
        }),
    };
    // 4 % cheaper: below the 5 % threshold.
    let mild = app
        .pricing()
        .record_competitor_price(authed(observe("C-1", "shop-a", 9_600)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((mild.undercut_bp, mild.alert), (400, false));
    // 12 % cheaper: an alert.
    let deep = app
        .pricing()
        .record_competitor_price(authed(observe("C-2", "shop-b", 8_800)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((deep.undercut_bp, deep.alert), (1_200, true));
    assert_eq!(deep.our_price, eur(10_000));
    let alerts = app
        .pricing()
        .list_competitor_alerts(authed(pb::ListCompetitorAlertsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(alerts.alerts.len(), 1);
    assert_eq!(alerts.alerts[0].sku, "skus/C-2");
    assert_eq!(app.events_of_type("retail.events.v1.CompetitorUndercut").await.len(), 1);
    // A newer observation at our price clears the alert.
    app.pricing()
        .record_competitor_price(authed(observe("C-2", "shop-b", 10_000)))
        .await
        .unwrap();
    let alerts = app
        .pricing()
        .list_competitor_alerts(authed(pb::ListCompetitorAlertsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(alerts.alerts.is_empty());
}

#[tokio::test]
async fn bad_pricing_input_gets_precise_errors() {
    let app = spawn_app().await;
    app.skus(&["B-1"]).await;
    let mut p = app.pricing();
    let cases: Vec<(tonic::Status, Code, Vec<&str>)> = vec![
        (
            p.set_list_price(authed(pb::SetListPriceRequest {
                sku: "skus/B-1".into(),
                price: Some(Money {
                    currency_code: "euro".into(),
                    amount_minor: -5,
                }),
            }))
            .await
            .unwrap_err(),
            Code::InvalidArgument,
            vec!["price.currency_code", "price.amount_minor"],
        ),
        (
            p.set_list_price(authed(pb::SetListPriceRequest {
                sku: "skus/NOPE".into(),
                price: eur(100),
            }))
            .await
            .unwrap_err(),
            Code::NotFound,
            vec![],
        ),
        (
            p.create_promotion(authed(pb::CreatePromotionRequest {
                promotion: Some(pb::Promotion {
                    display_name: String::new(),
                    discount_bp: 9_500,
                    start_time: Some(timestamp(Utc::now())),
                    end_time: Some(timestamp(Utc::now() - Duration::days(1))),
                    skus: vec!["skus/b 1".into()],
                    ..Default::default()
                }),
                request_id: String::new(),
            }))
            .await
            .unwrap_err(),
            Code::InvalidArgument,
            vec![
                "promotion.display_name",
                "promotion.discount_bp",
                "promotion.skus[0]",
                "promotion.end_time",
            ],
        ),
        (
            p.set_tier_discount(authed(pb::SetTierDiscountRequest {
                tier_discount: Some(pb::TierDiscount {
                    tier: "gold tier!".into(),
                    discount_bp: 10_000,
                }),
            }))
            .await
            .unwrap_err(),
            Code::InvalidArgument,
            vec!["tier_discount.tier", "tier_discount.discount_bp"],
        ),
        (
            p.quote_prices(authed(pb::QuotePricesRequest {
                channel: 0,
                currency_code: "EURO".into(),
                lines: vec![pb::QuoteLine {
                    sku: "skus/B-1".into(),
                    quantity: 0,
                }],
                ..Default::default()
            }))
            .await
            .unwrap_err(),
            Code::InvalidArgument,
            vec!["channel", "currency_code", "lines[0].quantity"],
        ),
        (
            p.quote_prices(authed(quote_request(
                pb::SalesChannel::Store,
                "",
                Utc::now(),
                &[("B-1", 1)],
            )))
            .await
            .unwrap_err(),
            Code::FailedPrecondition,
            vec![],
        ),
        (
            p.quote_prices(authed(quote_request(
                pb::SalesChannel::Store,
                "",
                Utc::now(),
                &[("GHOST", 1)],
            )))
            .await
            .unwrap_err(),
            Code::NotFound,
            vec![],
        ),
    ];
    for (i, (status, code, fields)) in cases.into_iter().enumerate() {
        assert_eq!(status.code(), code, "case {i}: {status:?}");
        assert_eq!(violated_fields(&status), fields, "case {i}: {status:?}");
    }
    let promos = p
        .list_promotions(authed(pb::ListPromotionsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(promos.promotions.is_empty());
    let err = p
        .set_list_price(with_token(
            &staff_token(&["catalog.read", "catalog.write"]),
            pb::SetListPriceRequest {
                sku: "skus/B-1".into(),
                price: eur(100),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

/// `i64::MIN` and `i64::MAX` (and the ends of the narrower types) in every numeric
/// input of pricing and the catalog's lists: each is refused with a field violation
/// or answered, never INTERNAL.
#[tokio::test]
async fn the_extremes_of_every_numeric_pricing_and_catalog_input_are_refused_with_a_field_violation() {
    let app = spawn_app().await;
    app.skus(&["E-1"]).await;
    list_price(&app, "E-1", 1_000).await;
    let mut p = app.pricing();
    let mut c = app.catalog();
    let at = |seconds: i64| Some(prost_types::Timestamp { seconds, nanos: 0 });
    for extreme in [i64::MIN, i64::MAX] {
        let r = p
            .set_list_price(authed(pb::SetListPriceRequest {
                sku: "skus/E-1".into(),
                price: eur(extreme),
            }))
            .await;
        assert_extreme(
            &format!("list price {extreme}"),
            r.map(drop),
            Some("price.amount_minor"),
        );
        let r = p
            .set_partner_price(authed(pb::SetPartnerPriceRequest {
                partner_price: Some(pb::PartnerPrice {
                    partner_level: "gold".into(),
                    sku: "skus/E-1".into(),
                    price: eur(extreme),
                }),
            }))
            .await;
        assert_extreme(
            &format!("partner price {extreme}"),
            r.map(drop),
            Some("partner_price.price.amount_minor"),
        );
        let r = p
            .record_competitor_price(authed(pb::RecordCompetitorPriceRequest {
                observation: Some(pb::CompetitorPrice {
                    sku: "skus/E-1".into(),
                    source: "shop.example/1".into(),
                    price: eur(extreme),
                    ..Default::default()
                }),
            }))
            .await;
        assert_extreme(
            &format!("competitor price {extreme}"),
            r.map(drop),
            Some("observation.price.amount_minor"),
        );
        let r = p
            .record_competitor_price(authed(pb::RecordCompetitorPriceRequest {
                observation: Some(pb::CompetitorPrice {
                    sku: "skus/E-1".into(),
                    source: "shop.example/1".into(),
                    price: eur(900),
                    observe_time: at(extreme),
                    ..Default::default()
                }),
            }))
            .await;
        assert_extreme(
            &format!("competitor observed at {extreme}"),
            r.map(drop),
            Some("observation.observe_time"),
        );
        let r = p
            .quote_prices(authed(quote_request(
                pb::SalesChannel::Store,
                "",
                Utc::now(),
                &[("E-1", extreme)],
            )))
            .await;
        assert_extreme(
            &format!("quote quantity {extreme}"),
            r.map(drop),
            Some("lines[0].quantity"),
        );
        let mut request = quote_request(pb::SalesChannel::Store, "", Utc::now(), &[("E-1", 1)]);
        request.price_time = at(extreme);
        let r = p.quote_prices(authed(request)).await;
        assert_extreme(&format!("quote at {extreme}"), r.map(drop), Some("price_time"));
        for (start, end, field) in [
            (at(extreme), Some(timestamp(Utc::now())), "promotion.start_time"),
            (Some(timestamp(Utc::now())), at(extreme), "promotion.end_time"),
        ] {
            let r = p
                .create_promotion(authed(pb::CreatePromotionRequest {
                    promotion: Some(pb::Promotion {
                        display_name: "extreme".into(),
                        discount_bp: 1_000,
                        start_time: start,
                        end_time: end,
                        skus: vec!["skus/E-1".into()],
                        ..Default::default()
                    }),
                    request_id: String::new(),
                }))
                .await;
            assert_extreme(&format!("promotion {field} {extreme}"), r.map(drop), Some(field));
        }
        let r = p
            .list_promotions(authed(pb::ListPromotionsRequest {
                active_at: at(extreme),
                ..Default::default()
            }))
            .await;
        assert_extreme(
            &format!("promotions active at {extreme}"),
            r.map(drop),
            Some("active_at"),
        );
    }
    let r = p
        .set_tier_discount(authed(pb::SetTierDiscountRequest {
            tier_discount: Some(pb::TierDiscount {
                tier: "gold".into(),
                discount_bp: u32::MAX,
            }),
        }))
        .await;
    assert_extreme("tier discount u32::MAX", r.map(drop), Some("tier_discount.discount_bp"));
    let r = p
        .create_promotion(authed(pb::CreatePromotionRequest {
            promotion: Some(pb::Promotion {
                display_name: "extreme".into(),
                discount_bp: u32::MAX,
                start_time: Some(timestamp(Utc::now())),
                end_time: Some(timestamp(Utc::now() + Duration::days(1))),
                skus: vec!["skus/E-1".into()],
                ..Default::default()
            }),
            request_id: String::new(),
        }))
        .await;
    assert_extreme("promotion u32::MAX", r.map(drop), Some("promotion.discount_bp"));
    for (page_size, field) in [(i32::MIN, Some("page_size")), (i32::MAX, None)] {
        let r = p
            .list_promotions(authed(pb::ListPromotionsRequest {
                page_size,
                ..Default::default()
            }))
            .await;
        assert_extreme(&format!("promotions page size {page_size}"), r.map(drop), field);
        let r = p
            .list_competitor_alerts(authed(pb::ListCompetitorAlertsRequest {
                page_size,
                ..Default::default()
            }))
            .await;
        assert_extreme(&format!("alerts page size {page_size}"), r.map(drop), field);
        let r = c
            .list_products(authed(pb::ListProductsRequest {
                page_size,
                ..Default::default()
            }))
            .await;
        assert_extreme(&format!("products page size {page_size}"), r.map(drop), field);
        let r = c
            .list_listing_changes(authed(pb::ListListingChangesRequest {
                sku: "skus/E-1".into(),
                page_size,
                ..Default::default()
            }))
            .await;
        assert_extreme(&format!("listing changes page size {page_size}"), r.map(drop), field);
    }
    let promos = p
        .list_promotions(authed(pb::ListPromotionsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(promos.promotions.is_empty(), "no promotion was made");
    let tiers = p
        .list_tier_discounts(authed(pb::ListTierDiscountsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(tiers.tier_discounts.is_empty(), "no tier discount was set");
}
