//! Catalog-inventory driven over gRPC on port 0, on SQLite or PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

mod coupons;
mod helpers;
mod inventory;
mod partners;
mod pricing;

use helpers::*;
use prost_types::FieldMask;
use retail_proto::catalog::{self as pb};
use tonic::Code;

fn full_product() -> pb::Product {
    pb::Product {
        category: "Footwear/Running".into(),
        title_parts: Some(pb::TitleParts {
            category_words: vec!["running shoe".into()],
            attribute_words: vec!["lightweight".into()],
            brand_words: vec!["Trailfox".into()],
            selling_point_words: vec!["all-day comfort".into()],
            promotion_words: vec!["new season".into()],
        }),
        media: vec![pb::Media {
            kind: pb::media::Kind::Image as i32,
            uri: "https://cdn.example/runner.jpg".into(),
        }],
        detail: "# Runner\nLight and fast.".into(),
        tags: vec!["scenario/trail".into(), "positioning/premium".into()],
        role: pb::ProductRole::Hero as i32,
        skus: vec![
            sku("run-42", &[("size", "42"), ("color", "red")]),
            sku("RUN-43", &[("size", "43"), ("color", "red")]),
        ],
        ..Default::default()
    }
}

#[tokio::test]
async fn a_product_is_created_once_per_request_id_with_its_composed_title() {
    let app = spawn_app().await;
    let request = pb::CreateProductRequest {
        product: Some(full_product()),
        request_id: "create-runner-1".into(),
    };
    let created = app
        .catalog()
        .create_product(authed(request.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        created.title,
        "Trailfox lightweight running shoe all-day comfort new season"
    );
    assert_eq!(created.category, "footwear/running");
    assert_eq!(created.role, pb::ProductRole::Hero as i32);
    let codes: Vec<_> = created.skus.iter().map(|s| s.sku_code.as_str()).collect();
    assert_eq!(codes, ["RUN-42", "RUN-43"]);
    assert_eq!(created.tags, ["scenario/trail", "positioning/premium"]);

    // A retry with the same id returns the first product; nothing new is created.
    let replayed = app
        .catalog()
        .create_product(authed(request.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed.name, created.name);
    // The same id with another request is refused.
    let mut other = request.clone();
    other.product.as_mut().unwrap().detail = "changed".into();
    let err = app.catalog().create_product(authed(other)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["request_id"]);

    let got = app
        .catalog()
        .get_product(authed(pb::GetProductRequest {
            name: created.name.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, created);
    let batch = app
        .catalog()
        .batch_get_products(authed(pb::BatchGetProductsRequest {
            names: vec![created.name.clone(), created.name.clone()],
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.products.len(), 2);
    assert_eq!(app.events_of_type("retail.events.v1.ProductCreated").await.len(), 1);
}

#[tokio::test]
async fn a_taken_sku_code_is_already_exists_and_nothing_is_written() {
    let app = spawn_app().await;
    app.skus(&["SHOE-1"]).await;
    let err = app
        .catalog()
        .create_product(authed(pb::CreateProductRequest {
            product: Some(product(
                "footwear",
                &["boot"],
                vec![sku("BOOT-1", &[]), sku("shoe-1", &[])],
            )),
            request_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    // The product and its first SKU were rolled back with the clash.
    let err = app
        .catalog()
        .batch_get_skus(authed(pb::BatchGetSkusRequest {
            names: vec!["skus/BOOT-1".into()],
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let all = app
        .catalog()
        .list_products(authed(pb::ListProductsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.products.len(), 1);
}

#[tokio::test]
async fn an_update_changes_only_the_masked_fields() {
    let app = spawn_app().await;
    let created = app.create(full_product()).await;
    let updated = app
        .catalog()
        .update_product(authed(pb::UpdateProductRequest {
            product: Some(pb::Product {
                name: created.name.clone(),
                role: pb::ProductRole::Anchor as i32,
                detail: "ignored: not in the mask".into(),
                tags: vec!["scenario/road".into()],
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["role".into(), "tags".into()],
            }),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.role, pb::ProductRole::Anchor as i32);
    assert_eq!(updated.tags, ["scenario/road"]);
    assert_eq!(updated.detail, created.detail);
    assert_eq!(updated.title, created.title);

    let err = app
        .catalog()
        .update_product(authed(pb::UpdateProductRequest {
            product: Some(pb::Product {
                name: created.name.clone(),
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["skus".into(), "title_parts".into()],
            }),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields = violated_fields(&err);
    assert!(fields.contains(&"update_mask".to_owned()), "{fields:?}");
    assert!(fields.contains(&"product.title_parts".to_owned()), "{fields:?}");
}

#[tokio::test]
async fn products_list_by_category_tag_role_and_listing_state_page_by_page() {
    let app = spawn_app().await;
    let mut names = Vec::new();
    for i in 0..5 {
        let mut p = product(
            if i % 2 == 0 { "footwear/running" } else { "apparel" },
            &["item"],
            vec![sku(&format!("P{i}"), &[])],
        );
        p.tags = vec![format!("batch/{}", i % 2)];
        p.role = if i == 4 { pb::ProductRole::Hero as i32 } else { 0 };
        names.push(app.create(p).await.name);
    }
    app.catalog()
        .set_listing(authed(pb::SetListingRequest {
            sku: "skus/P1".into(),
            channel: pb::SalesChannel::Online as i32,
            listed: true,
            reason: "launch".into(),
        }))
        .await
        .unwrap();
    let list = |req: pb::ListProductsRequest| {
        let mut c = app.catalog();
        async move {
            c.list_products(authed(req))
                .await
                .unwrap()
                .into_inner()
                .products
                .into_iter()
                .map(|p| p.name)
                .collect::<Vec<_>>()
        }
    };
    let footwear = list(pb::ListProductsRequest {
        category: "footwear".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(footwear, [names[0].clone(), names[2].clone(), names[4].clone()]);
    let tagged = list(pb::ListProductsRequest {
        tag: "batch/1".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(tagged, [names[1].clone(), names[3].clone()]);
    let heroes = list(pb::ListProductsRequest {
        role: pb::ProductRole::Hero as i32,
        ..Default::default()
    })
    .await;
    assert_eq!(heroes, [names[4].clone()]);
    let listed = list(pb::ListProductsRequest {
        channel: pb::SalesChannel::Online as i32,
        listed: true,
        ..Default::default()
    })
    .await;
    assert_eq!(listed, [names[1].clone()]);
    let unlisted = list(pb::ListProductsRequest {
        channel: pb::SalesChannel::Online as i32,
        listed: false,
        ..Default::default()
    })
    .await;
    assert_eq!(unlisted.len(), 4);

    // Pages of two cover every product once, in creation order.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .catalog()
            .list_products(authed(pb::ListProductsRequest {
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.products.into_iter().map(|p| p.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, names);
}

#[tokio::test]
async fn listing_changes_are_kept_and_published() {
    let app = spawn_app().await;
    app.skus(&["L-1"]).await;
    for (listed, reason) in [(true, "launch"), (true, "again"), (false, "recall")] {
        app.catalog()
            .set_listing(authed(pb::SetListingRequest {
                sku: "skus/l-1".into(),
                channel: pb::SalesChannel::Store as i32,
                listed,
                reason: reason.into(),
            }))
            .await
            .unwrap();
    }
    let history = app
        .catalog()
        .list_listing_changes(authed(pb::ListListingChangesRequest {
            sku: "skus/L-1".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    // Setting the state it already had is no change.
    let states: Vec<_> = history.changes.iter().map(|c| (c.listed, c.reason.as_str())).collect();
    assert_eq!(states, [(false, "recall"), (true, "launch")]);
    assert_eq!(history.changes[0].actor, "staff-1");
    assert_eq!(app.events_of_type("retail.events.v1.ListingChanged").await.len(), 2);
    let sku = app
        .catalog()
        .batch_get_skus(authed(pb::BatchGetSkusRequest {
            names: vec!["skus/L-1".into()],
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(sku.skus[0].listed_channels.is_empty());
}

#[tokio::test]
async fn reconciliation_finds_each_kind_of_mismatch() {
    let app = spawn_app().await;
    app.warehouse("W1", 0).await;
    // Same goods under two codes, one listed without stock, one unlisted with stock.
    app.create(product("shoes", &["runner"], vec![sku("A-42", &[("size", "42")])]))
        .await;
    app.create(product("shoes", &["Runner"], vec![sku("B-42", &[("size", "42")])]))
        .await;
    app.create(product(
        "shoes",
        &["boot"],
        vec![
            sku("EMPTY", &[("size", "1")]),
            sku("HIDDEN", &[("size", "2")]),
            sku("FINE", &[("size", "3")]),
        ],
    ))
    .await;
    for code in ["A-42", "B-42", "HIDDEN", "FINE"] {
        app.receive(code, "W1", 3).await;
    }
    for code in ["A-42", "B-42", "EMPTY", "FINE"] {
        app.catalog()
            .set_listing(authed(pb::SetListingRequest {
                sku: format!("skus/{code}"),
                channel: pb::SalesChannel::Online as i32,
                listed: true,
                reason: String::new(),
            }))
            .await
            .unwrap();
    }
    let report = app
        .catalog()
        .reconcile_listings(authed(pb::ReconcileListingsRequest {
            channel: pb::SalesChannel::Online as i32,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.listed_without_stock, ["skus/EMPTY"]);
    assert_eq!(report.unlisted_with_stock, ["skus/HIDDEN"]);
    assert_eq!(report.duplicates.len(), 1);
    assert_eq!(report.duplicates[0].skus, ["skus/A-42", "skus/B-42"]);
    // Another channel: nothing listed, so everything in stock is unlisted.
    let store = app
        .catalog()
        .reconcile_listings(authed(pb::ReconcileListingsRequest {
            channel: pb::SalesChannel::Store as i32,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(store.unlisted_with_stock.len(), 4);
    assert!(store.listed_without_stock.is_empty() && store.duplicates.is_empty());
}

#[tokio::test]
async fn batch_get_skus_answers_in_the_order_asked_with_stock() {
    let app = spawn_app().await;
    app.warehouse("W1", 0).await;
    app.warehouse("W2", 1).await;
    app.skus(&["S-1", "S-2"]).await;
    app.receive("S-2", "W1", 4).await;
    app.receive("S-2", "W2", 6).await;
    let got = app
        .catalog()
        .batch_get_skus(authed(pb::BatchGetSkusRequest {
            names: vec!["skus/S-2".into(), "skus/s-1".into()],
        }))
        .await
        .unwrap()
        .into_inner();
    let summary: Vec<_> = got
        .skus
        .iter()
        .map(|s| (s.sku_code.as_str(), s.sellable_quantity))
        .collect();
    assert_eq!(summary, [("S-2", 10), ("S-1", 0)]);
    let err = app
        .catalog()
        .batch_get_skus(authed(pb::BatchGetSkusRequest {
            names: vec!["skus/S-1".into(), "skus/NOPE".into()],
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("skus/NOPE"), "{}", err.message());
}

/// Sellable units of `code` as `BatchGetSkus` shows them.
async fn shown_sellable(app: &TestApp, code: &str) -> i64 {
    app.catalog()
        .batch_get_skus(authed(pb::BatchGetSkusRequest {
            names: vec![format!("skus/{code}")],
        }))
        .await
        .unwrap()
        .into_inner()
        .skus[0]
        .sellable_quantity
}

/// Waits until `BatchGetSkus` shows `expected` for `code`: the cached view must follow
/// every committed change within the event log's delivery time.
async fn wait_shown(app: &TestApp, code: &str, expected: i64) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let shown = shown_sellable(app, code).await;
        if shown == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{code}: still shows {shown} sellable, {expected} committed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn cached_sku_views_follow_every_committed_change_even_when_reads_race_writes() {
    let app = spawn_app().await;
    app.warehouse("W1", 0).await;
    app.skus(&["HOT-1", "HOT-2"]).await;
    app.receive("HOT-1", "W1", 40).await;
    app.receive("HOT-2", "W1", 40).await;
    wait_shown(&app, "HOT-1", 40).await;

    // Each change is visible after it commits, also once the view is cached.
    app.reserve("order-a", &[("HOT-1", 3)]).await.unwrap();
    wait_shown(&app, "HOT-1", 37).await;
    app.catalog()
        .set_listing(authed(pb::SetListingRequest {
            sku: "skus/HOT-1".into(),
            channel: pb::SalesChannel::Online as i32,
            listed: true,
            reason: "launch".into(),
        }))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let got = app
            .catalog()
            .batch_get_skus(authed(pb::BatchGetSkusRequest {
                names: vec!["skus/HOT-1".into()],
            }))
            .await
            .unwrap()
            .into_inner();
        if got.skus[0].listed_channels == [pb::SalesChannel::Online as i32] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the listing never showed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Reservations race many readers that load and cache views meanwhile; whatever
    // interleaving happened, the views end on the committed stock.
    let mut tasks = Vec::new();
    for round in 0..12 {
        let mut inventory = app.inventory();
        tasks.push(tokio::spawn(async move {
            inventory
                .reserve_stock(authed(pb::ReserveStockRequest {
                    order_id: format!("race-{round}"),
                    lines: vec![
                        pb::ReservationLine {
                            sku: "skus/HOT-1".into(),
                            quantity: 1,
                        },
                        pb::ReservationLine {
                            sku: "skus/HOT-2".into(),
                            quantity: 2,
                        },
                    ],
                    ttl: None,
                }))
                .await
                .unwrap();
        }));
        for _ in 0..4 {
            let mut catalog = app.catalog();
            tasks.push(tokio::spawn(async move {
                catalog
                    .batch_get_skus(authed(pb::BatchGetSkusRequest {
                        names: vec!["skus/HOT-2".into(), "skus/HOT-1".into()],
                    }))
                    .await
                    .unwrap();
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(app.totals("HOT-1").await.1, 37 - 12);
    assert_eq!(app.totals("HOT-2").await.1, 40 - 24);
    wait_shown(&app, "HOT-1", 37 - 12).await;
    wait_shown(&app, "HOT-2", 40 - 24).await;
    // ... and stay there: no stale load lands late.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(shown_sellable(&app, "HOT-1").await, 25);
    assert_eq!(shown_sellable(&app, "HOT-2").await, 16);
}

#[tokio::test]
async fn bad_catalog_input_gets_precise_errors_and_writes_nothing() {
    let app = spawn_app().await;
    let mut c = app.catalog();
    let create = |p: pb::Product| pb::CreateProductRequest {
        product: Some(p),
        request_id: String::new(),
    };
    let mut bad_media = full_product();
    bad_media.media[0].uri = "javascript:alert(1)".into();
    bad_media.skus = vec![sku("OK-1", &[])];
    let mut bad_codes = full_product();
    bad_codes.skus = vec![sku("SH OE", &[]), sku("ok;drop", &[]), sku("", &[]), sku("-X", &[])];
    let mut duplicate = full_product();
    duplicate.skus = vec![sku("D-1", &[]), sku("d-1", &[])];
    let mut no_title = full_product();
    no_title.title_parts = Some(pb::TitleParts::default());
    no_title.category = "a//b".into();
    let cases: Vec<(tonic::Status, Code, Vec<&str>)> = vec![
        (
            c.create_product(authed(create(bad_media))).await.unwrap_err(),
            Code::InvalidArgument,
            vec!["product.media[0].uri"],
        ),
        (
            c.create_product(authed(create(bad_codes))).await.unwrap_err(),
            Code::InvalidArgument,
            vec![
                "product.skus[0].sku_code",
                "product.skus[1].sku_code",
                "product.skus[2].sku_code",
                "product.skus[3].sku_code",
            ],
        ),
        (
            c.create_product(authed(create(duplicate))).await.unwrap_err(),
            Code::InvalidArgument,
            vec!["product.skus[1].sku_code"],
        ),
        (
            c.create_product(authed(create(no_title))).await.unwrap_err(),
            Code::InvalidArgument,
            vec!["product.category", "product.title_parts.category_words"],
        ),
        (
            c.create_product(authed(pb::CreateProductRequest::default()))
                .await
                .unwrap_err(),
            Code::InvalidArgument,
            vec!["product"],
        ),
        (
            c.get_product(authed(pb::GetProductRequest {
                name: "products/not-a-uuid".into(),
            }))
            .await
            .unwrap_err(),
            Code::InvalidArgument,
            vec!["name"],
        ),
        (
            c.get_product(authed(pb::GetProductRequest {
                name: format!("products/{}", uuid::Uuid::new_v4()),
            }))
            .await
            .unwrap_err(),
            Code::NotFound,
            vec![],
        ),
        (
            c.set_listing(authed(pb::SetListingRequest {
                sku: "skus/UNKNOWN".into(),
                channel: pb::SalesChannel::Online as i32,
                listed: true,
                reason: String::new(),
            }))
            .await
            .unwrap_err(),
            Code::NotFound,
            vec![],
        ),
        (
            c.set_listing(authed(pb::SetListingRequest {
                sku: "sku/X".into(),
                channel: 99,
                listed: true,
                reason: "x".repeat(201),
            }))
            .await
            .unwrap_err(),
            Code::InvalidArgument,
            vec!["sku", "channel", "reason"],
        ),
        (
            c.batch_get_skus(authed(pb::BatchGetSkusRequest {
                names: (0..101).map(|i| format!("skus/S{i}")).collect(),
            }))
            .await
            .unwrap_err(),
            Code::InvalidArgument,
            vec!["names"],
        ),
        (
            c.list_products(authed(pb::ListProductsRequest {
                page_token: "garbage".into(),
                ..Default::default()
            }))
            .await
            .unwrap_err(),
            Code::InvalidArgument,
            vec!["page_token"],
        ),
    ];
    for (i, (status, code, fields)) in cases.into_iter().enumerate() {
        assert_eq!(status.code(), code, "case {i}: {status:?}");
        assert_eq!(violated_fields(&status), fields, "case {i}: {status:?}");
    }
    let all = c
        .list_products(authed(pb::ListProductsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(all.products.is_empty(), "nothing was written");

    // A token without the scope is denied; no token is unauthenticated.
    let read_only = staff_token(&["catalog.read"]);
    let err = c
        .create_product(with_token(&read_only, create(full_product())))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = c
        .get_product(tonic::Request::new(pb::GetProductRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}
