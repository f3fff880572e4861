//! Coupons across `retail-suite up`'s wiring: catalog defines, quotes and redeems
//! them; orders redeems a code in the placement saga and gives it back when an
//! unpaid order is cancelled. On a fresh database per service (PostgreSQL when
//! `RETAIL_TEST_DATABASE_URL` is set).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose
// Amounts in minor units are written major_minor (123_45 = 123.45).
#![allow(clippy::inconsistent_digit_grouping)]

use chrono::{Duration, Utc};
use retail_kit::convert::timestamp;
use retail_proto::catalog::catalog_service_client::CatalogServiceClient;
use retail_proto::catalog::coupon_service_client::CouponServiceClient;
use retail_proto::catalog::inventory_service_client::InventoryServiceClient;
use retail_proto::catalog::pricing_service_client::PricingServiceClient;
use retail_proto::catalog::{self as cpb};
use retail_proto::orders::orders_service_client::OrdersServiceClient;
use retail_proto::orders::{self as opb};
use retail_testkit::tokens::violated_fields;
use tonic::Code;
use tonic::transport::Channel;

mod common;
use common::{authed, channel, eur};

/// Every seeded SKU's list price: 100.00 EUR.
const PRICE: i64 = 100_00;

struct World {
    coupons: CouponServiceClient<Channel>,
    pricing: PricingServiceClient<Channel>,
    orders: OrdersServiceClient<Channel>,
    admin: String,
    /// Four SKUs of one product in `footwear/running`, 1,000 units each.
    skus: Vec<String>,
    /// Three members, `members/{id}`.
    members: Vec<String>,
    suite: common::Running,
}

impl World {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(configure: impl FnOnce(&mut retail_suite::settings::SuiteSettings)) -> Self {
        let suite = common::start_with("coupons", configure).await;
        let admin = suite.admin.clone();
        let skus = suite.seed_catalog(4, Some(PRICE), &[]).await;
        let pricing = PricingServiceClient::new(channel(suite.catalog));
        let (_, members) = retail_suite::seed::register_members(channel(suite.membership), &admin, 3, 1)
            .await
            .unwrap();
        World {
            coupons: CouponServiceClient::new(channel(suite.catalog)),
            pricing,
            orders: OrdersServiceClient::new(channel(suite.orders)),
            admin,
            skus,
            members,
            suite,
        }
    }

    /// A SKU of a new product in `category`, priced and stocked like the others.
    async fn sku_in(&self, category: &str) -> String {
        let product = CatalogServiceClient::new(channel(self.suite.catalog))
            .create_product(authed(
                &self.admin,
                cpb::CreateProductRequest {
                    product: Some(cpb::Product {
                        category: category.into(),
                        title_parts: Some(cpb::TitleParts {
                            category_words: vec!["day pack".into()],
                            brand_words: vec!["Trailfox".into()],
                            ..Default::default()
                        }),
                        skus: vec![cpb::Sku {
                            sku_code: format!("C{}", &uuid::Uuid::new_v4().simple().to_string()[..10]),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let sku = product.skus[0].name.clone();
        set_price(&self.pricing, &self.admin, &sku).await;
        InventoryServiceClient::new(channel(self.suite.catalog))
            .receive_stock(authed(
                &self.admin,
                cpb::ReceiveStockRequest {
                    sku: sku.clone(),
                    warehouse: "warehouses/MAIN".into(),
                    quantity: 100,
                    reference: "test".into(),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap();
        sku
    }

    /// A coupon valid from yesterday for a week, with `shape` applied.
    fn coupon(&self, shape: impl FnOnce(&mut cpb::Coupon)) -> cpb::Coupon {
        let mut c = cpb::Coupon {
            display_name: "Winter welcome".into(),
            kind: cpb::coupon::Kind::SingleUse.into(),
            percent_off_bp: 10_00,
            start_time: Some(timestamp(Utc::now() - Duration::days(1))),
            end_time: Some(timestamp(Utc::now() + Duration::days(7))),
            ..Default::default()
        };
        shape(&mut c);
        c
    }

    async fn create(&self, coupon: cpb::Coupon) -> Result<cpb::Coupon, tonic::Status> {
        self.coupons
            .clone()
            .create_coupon(authed(
                &self.admin,
                cpb::CreateCouponRequest {
                    coupon: Some(coupon),
                    request_id: String::new(),
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    /// Creates a single-use coupon and issues a code of it to `member`.
    async fn code_for(&self, member: &str, shape: impl FnOnce(&mut cpb::Coupon)) -> (cpb::Coupon, String) {
        let coupon = self.create(self.coupon(shape)).await.unwrap();
        let issued = self
            .coupons
            .clone()
            .issue_coupon_codes(authed(
                &self.admin,
                cpb::IssueCouponCodesRequest {
                    coupon: coupon.name.clone(),
                    members: vec![member.into()],
                },
            ))
            .await
            .unwrap()
            .into_inner();
        (coupon, issued.codes[0].code.clone())
    }

    async fn get(&self, coupon: &cpb::Coupon) -> cpb::Coupon {
        self.coupons
            .clone()
            .get_coupon(authed(
                &self.admin,
                cpb::GetCouponRequest {
                    name: coupon.name.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
    }

    async fn quote(
        &self,
        code: &str,
        member: &str,
        lines: &[(&str, i64)],
        channel: cpb::SalesChannel,
    ) -> Result<cpb::QuotePricesResponse, tonic::Status> {
        self.pricing
            .clone()
            .quote_prices(authed(
                &self.admin,
                cpb::QuotePricesRequest {
                    channel: channel.into(),
                    currency_code: "EUR".into(),
                    coupon_code: code.into(),
                    member: member.into(),
                    lines: lines
                        .iter()
                        .map(|(sku, quantity)| cpb::QuoteLine {
                            sku: (*sku).into(),
                            quantity: *quantity,
                        })
                        .collect(),
                    ..Default::default()
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    async fn place(&self, member: &str, code: &str, request_id: &str) -> Result<opb::Order, tonic::Status> {
        place(&self.orders, &self.admin, &self.skus[0], member, code, request_id).await
    }

    async fn cancel(&self, order: &opb::Order) {
        self.orders
            .clone()
            .cancel_order(authed(
                &self.admin,
                opb::CancelOrderRequest {
                    name: order.name.clone(),
                    reason: "changed my mind".into(),
                },
            ))
            .await
            .unwrap();
    }

    async fn pay(&self, order: &opb::Order) {
        self.orders
            .clone()
            .pay_order(authed(
                &self.admin,
                opb::PayOrderRequest {
                    name: order.name.clone(),
                    payment: Some(opb::Payment {
                        reference: format!("psp-{}", order.name),
                        amount: order.total.clone(),
                        pay_time: None,
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap();
    }

    /// Places with `code` until catalog has released the cancelled order's use
    /// (the release follows the cancellation's commit).
    async fn place_when_released(&self, member: &str, code: &str) -> opb::Order {
        for attempt in 0..400 {
            match self.place(member, code, &format!("again-{code}-{attempt}")).await {
                Ok(order) => return order,
                Err(status) if status.code() == Code::FailedPrecondition => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(status) => panic!("{status:?}"),
            }
        }
        panic!("the cancelled order's coupon was never released");
    }
}

async fn set_price(pricing: &PricingServiceClient<Channel>, admin: &str, sku: &str) {
    pricing
        .clone()
        .set_list_price(authed(
            admin,
            cpb::SetListPriceRequest {
                sku: sku.into(),
                price: eur(PRICE),
            },
        ))
        .await
        .unwrap();
}

/// One unit of `sku`, online, for `member` (empty: a guest) with `code`.
async fn place(
    orders: &OrdersServiceClient<Channel>,
    admin: &str,
    sku: &str,
    member: &str,
    code: &str,
    request_id: &str,
) -> Result<opb::Order, tonic::Status> {
    orders
        .clone()
        .place_order(authed(
            admin,
            opb::PlaceOrderRequest {
                order: Some(opb::Order {
                    member: member.into(),
                    channel: opb::OrderChannel::Online.into(),
                    coupon_code: code.into(),
                    lines: vec![opb::OrderLine {
                        sku: sku.into(),
                        quantity: 1,
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                request_id: request_id.into(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

/// Places `n` orders with `code` at once; the placed ones and the refusals.
async fn race(world: &World, n: usize, member: &str, code: &str) -> (Vec<opb::Order>, Vec<tonic::Status>) {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (orders, admin, sku) = (world.orders.clone(), world.admin.clone(), world.skus[1].clone());
            let (member, code) = (member.to_owned(), code.to_owned());
            tokio::spawn(async move { place(&orders, &admin, &sku, &member, &code, &format!("race-{code}-{i}")).await })
        })
        .collect();
    let (mut placed, mut refused) = (Vec::new(), Vec::new());
    for t in tasks {
        match t.await.unwrap() {
            Ok(order) => placed.push(order),
            Err(status) => refused.push(status),
        }
    }
    (placed, refused)
}

fn coupon_discount(order: &opb::Order) -> i64 {
    order
        .lines
        .iter()
        .flat_map(|l| &l.discounts)
        .filter(|d| d.rule.starts_with("coupons/"))
        .map(|d| d.amount.as_ref().map_or(0, |m| m.amount_minor))
        .sum()
}

#[tokio::test]
async fn fifty_concurrent_orders_with_one_single_use_code_discount_exactly_one() {
    let w = World::start().await;
    let member = w.members[0].clone();
    let (coupon, code) = w.code_for(&member, |_| {}).await;

    let (placed, refused) = race(&w, 50, &member, &code).await;

    assert_eq!(placed.len(), 1, "refusals: {refused:?}");
    let order = &placed[0];
    assert_eq!(order.coupon_code, code);
    assert_eq!(coupon_discount(order), 10_00);
    assert_eq!(order.total.as_ref().unwrap().amount_minor, PRICE - 10_00);
    assert_eq!(order.lines[0].discounts[0].rule, coupon.name);
    // The others fail whole: nothing placed, their stock given back.
    assert_eq!(refused.len(), 49);
    for status in &refused {
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert!(status.message().contains("used up"), "{}", status.message());
    }
    assert_eq!(w.get(&coupon).await.used_count, 1);
}

#[tokio::test]
async fn a_shared_code_with_a_cap_is_used_exactly_that_often_under_concurrency() {
    let w = World::start().await;
    let coupon = w
        .create(w.coupon(|c| {
            c.kind = cpb::coupon::Kind::Shared.into();
            c.code = "spring-5".into();
            c.usage_cap = 5;
            c.percent_off_bp = 0;
            c.amount_off = eur(7_50);
        }))
        .await
        .unwrap();
    assert_eq!(coupon.code, "SPRING-5");

    let (placed, refused) = race(&w, 30, "", "spring-5").await;

    assert_eq!(placed.len(), 5, "refusals: {refused:?}");
    assert!(placed.iter().all(|o| coupon_discount(o) == 7_50));
    assert!(refused.iter().all(|s| s.code() == Code::FailedPrecondition));
    assert_eq!(w.get(&coupon).await.used_count, 5);
}

#[tokio::test]
async fn cancelling_before_payment_gives_the_code_back_and_payment_keeps_it_used() {
    let w = World::start().await;
    let member = w.members[1].clone();
    let (coupon, code) = w.code_for(&member, |_| {}).await;

    let first = w.place(&member, &code, "first").await.unwrap();
    let refused = w.place(&member, &code, "second").await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    // A retry of the first placement answers the same order, without a second use.
    assert_eq!(w.place(&member, &code, "first").await.unwrap().name, first.name);

    w.cancel(&first).await;
    let again = w.place_when_released(&member, &code).await;
    assert_eq!(coupon_discount(&again), 10_00);
    assert_eq!(w.get(&coupon).await.used_count, 1);

    // Paid, the use stays even when the order is cancelled afterwards.
    w.pay(&again).await;
    w.cancel(&again).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let status = w.place(&member, &code, "after-paid").await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("used up"), "{}", status.message());
    assert_eq!(w.get(&coupon).await.used_count, 1);
}

#[tokio::test]
async fn an_unpaid_order_that_expires_gives_its_code_back() {
    // A payment window of a second, swept every second.
    let w = World::start_with(|s| {
        s.orders.orders.payment_window_secs = 1;
        s.orders.orders.sweep_every_secs = 1;
    })
    .await;
    let member = w.members[2].clone();
    let (coupon, code) = w.code_for(&member, |_| {}).await;
    let first = w.place(&member, &code, "unpaid").await.unwrap();
    assert_eq!(coupon_discount(&first), 10_00);

    // The sweeper cancels the order when its window closes, and the code is
    // usable again.
    let again = w.place_when_released(&member, &code).await;
    assert_ne!(again.name, first.name);
    assert_eq!(coupon_discount(&again), 10_00);
    // (This one expires too, a second later: its use is not asserted.)
    assert!(w.get(&coupon).await.used_count <= 1);
}

#[tokio::test]
async fn quotes_follow_scope_validity_and_ownership() {
    let w = World::start().await;
    let (ann, bob) = (w.members[0].clone(), w.members[1].clone());
    let online = cpb::SalesChannel::Online;
    let pack = w.sku_in("equipment/packs").await;

    // 15 % on one SKU: itemised on its line only.
    let (_, code) = w
        .code_for(&ann, |c| {
            c.percent_off_bp = 15_00;
            c.skus = vec![w.skus[0].clone()];
        })
        .await;
    let q = w
        .quote(&code, &ann, &[(&w.skus[0], 3), (&pack, 1)], online)
        .await
        .unwrap();
    assert_eq!(q.lines[0].coupon_discount.as_ref().unwrap().amount_minor, 45_00);
    assert_eq!(q.lines[0].line_total.as_ref().unwrap().amount_minor, 3 * PRICE - 45_00);
    assert_eq!(q.lines[1].coupon_discount.as_ref().unwrap().amount_minor, 0);
    assert_eq!(q.total.as_ref().unwrap().amount_minor, 4 * PRICE - 45_00);
    assert_eq!(
        q.coupon.as_ref().unwrap().discount.as_ref().unwrap().amount_minor,
        45_00
    );
    // Only lines out of scope: refused, saying why.
    let status = w.quote(&code, &ann, &[(&pack, 1)], online).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("out of scope"), "{}", status.message());
    // Another member's code, or a guest with a member's code.
    for member in [bob.as_str(), ""] {
        let status = w.quote(&code, member, &[(&w.skus[0], 1)], online).await.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(status.message().contains("another member"), "{}", status.message());
    }

    // A fixed 10.00 off a category and below it, from an order of 150.00.
    let (_, code) = w
        .code_for(&ann, |c| {
            c.percent_off_bp = 0;
            c.amount_off = eur(10_00);
            c.categories = vec!["footwear".into()];
            c.min_order = eur(150_00);
        })
        .await;
    let status = w
        .quote(&code, &ann, &[(&w.skus[0], 1), (&pack, 1)], online)
        .await
        .unwrap_err();
    assert!(status.message().contains("minimum order"), "{}", status.message());
    let q = w
        .quote(&code, &ann, &[(&w.skus[0], 1), (&w.skus[1], 2), (&pack, 1)], online)
        .await
        .unwrap();
    let off: Vec<i64> = q
        .lines
        .iter()
        .map(|l| l.coupon_discount.as_ref().unwrap().amount_minor)
        .collect();
    // Shared by the lines' totals: 1/3 and 2/3, the minor unit left to the first.
    assert_eq!(off, [3_34, 6_66, 0]);

    // The window, the channel and a disabled coupon.
    for (shape, why) in [
        (
            Box::new(|c: &mut cpb::Coupon| {
                c.start_time = Some(timestamp(Utc::now() - Duration::days(9)));
                c.end_time = Some(timestamp(Utc::now() - Duration::days(2)));
            }) as Box<dyn FnOnce(&mut cpb::Coupon)>,
            "expired",
        ),
        (
            Box::new(|c: &mut cpb::Coupon| {
                c.start_time = Some(timestamp(Utc::now() + Duration::days(2)));
                c.end_time = Some(timestamp(Utc::now() + Duration::days(9)));
            }),
            "not valid yet",
        ),
        (
            Box::new(|c: &mut cpb::Coupon| c.channels = vec![cpb::SalesChannel::App.into()]),
            "channel",
        ),
    ] {
        let (_, code) = w.code_for(&ann, shape).await;
        let status = w.quote(&code, &ann, &[(&w.skus[0], 1)], online).await.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(status.message().contains(why), "{why}: {}", status.message());
    }
    let (coupon, code) = w.code_for(&ann, |_| {}).await;
    let disabled = w
        .coupons
        .clone()
        .disable_coupon(authed(
            &w.admin,
            cpb::DisableCouponRequest {
                name: coupon.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(disabled.disable_time.is_some());
    let status = w.quote(&code, &ann, &[(&w.skus[0], 1)], online).await.unwrap_err();
    assert!(status.message().contains("disabled"), "{}", status.message());
    let status = w
        .quote("NO-SUCH-CODE", &ann, &[(&w.skus[0], 1)], online)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    // Issuing again gives a member the same code; listing pages.
    let listed = w
        .coupons
        .clone()
        .list_coupons(authed(
            &w.admin,
            cpb::ListCouponsRequest {
                page_size: 2,
                page_token: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.coupons.len(), 2);
    assert!(!listed.next_page_token.is_empty());
}

#[tokio::test]
async fn bad_coupons_are_refused_naming_each_field() {
    let w = World::start().await;
    let bad = |shape: Box<dyn FnOnce(&mut cpb::Coupon)>| w.coupon(shape);
    let cases: Vec<(cpb::Coupon, &str)> = vec![
        (
            bad(Box::new(|c: &mut cpb::Coupon| {
                c.end_time = Some(timestamp(Utc::now() - Duration::days(3)));
            })),
            "coupon.end_time",
        ),
        (
            bad(Box::new(|c: &mut cpb::Coupon| c.percent_off_bp = 10_001)),
            "coupon.percent_off_bp",
        ),
        (
            bad(Box::new(|c: &mut cpb::Coupon| c.percent_off_bp = 0)),
            "coupon.percent_off_bp",
        ),
        (
            bad(Box::new(|c: &mut cpb::Coupon| c.amount_off = eur(5_00))),
            "coupon.amount_off",
        ),
        (
            bad(Box::new(|c: &mut cpb::Coupon| c.skus = vec!["skus/NO-SUCH-SKU".into()])),
            "coupon.skus[0]",
        ),
        (
            bad(Box::new(|c: &mut cpb::Coupon| c.skus = vec!["not a sku".into()])),
            "coupon.skus[0]",
        ),
        (
            bad(Box::new(|c: &mut cpb::Coupon| {
                c.categories = vec!["nothing/here".into()]
            })),
            "coupon.categories[0]",
        ),
        (
            bad(Box::new(|c: &mut cpb::Coupon| {
                c.channels = vec![cpb::SalesChannel::Partner.into()]
            })),
            "coupon.channels[0]",
        ),
        (
            bad(Box::new(|c: &mut cpb::Coupon| {
                c.kind = cpb::coupon::Kind::Shared.into()
            })),
            "coupon.usage_cap",
        ),
        (
            bad(Box::new(|c: &mut cpb::Coupon| c.code = "MINE".into())),
            "coupon.code",
        ),
        (
            bad(Box::new(|c: &mut cpb::Coupon| c.display_name.clear())),
            "coupon.display_name",
        ),
    ];
    for (coupon, field) in cases {
        let status = w.create(coupon).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            violated_fields(&status).iter().any(|f| f == field),
            "{field}: {:?}",
            violated_fields(&status)
        );
    }
    // A coupon code on a partner sale, and a malformed one.
    let status = w
        .orders
        .clone()
        .place_order(authed(
            &w.admin,
            opb::PlaceOrderRequest {
                order: Some(opb::Order {
                    channel: opb::OrderChannel::Online.into(),
                    coupon_code: "x!".into(),
                    lines: vec![opb::OrderLine {
                        sku: w.skus[0].clone(),
                        quantity: 1,
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["order.coupon_code"]);
    // Create is idempotent by request id: the same request replays, another one
    // with the same id is refused.
    let request = cpb::CreateCouponRequest {
        coupon: Some(w.coupon(|_| {})),
        request_id: "create-1".into(),
    };
    let create = |request: cpb::CreateCouponRequest| {
        let mut coupons = w.coupons.clone();
        let request = authed(&w.admin, request);
        async move { coupons.create_coupon(request).await }
    };
    let first = create(request.clone()).await.unwrap().into_inner();
    let again = create(request.clone()).await.unwrap().into_inner();
    assert_eq!(first.name, again.name);
    let mut other = request;
    other.coupon.as_mut().unwrap().display_name = "Another".into();
    let status = create(other).await.unwrap_err();
    assert_eq!(violated_fields(&status), ["request_id"]);
}
