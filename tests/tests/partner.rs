//! The partner programme across the real services: partner orders placed and paid
//! through orders-logistics reach channel-partner through orders' event log and
//! move the targets of two partners and two reps; a partial refund takes its share
//! back. Progress, attainment, ranking and projection are checked against values
//! computed here.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose
// Amounts in minor units are written major_minor (100_00 = 100.00).
#![allow(clippy::inconsistent_digit_grouping)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use retail_kit::auth::{GrpcKeySource, ServiceTokenSource};
use retail_proto::orders::{self as opb};
use retail_proto::partner::partner_service_client::PartnerServiceClient;
use retail_proto::partner::target_service_client::TargetServiceClient;
use retail_proto::partner::{self as ppb};
use retail_testkit::TestDatabase;
use support::*;

/// Channel-partner on a fresh database, following orders' log, trusting identity.
async fn start_partner(suite: &Suite) -> (SocketAddr, TestDatabase) {
    let database = TestDatabase::new().await.unwrap();
    let mut settings = retail_channel_partner::Settings::default();
    settings.database.url = database.secret_url();
    settings.database.max_connections = 6;
    settings.events.poll_ms = 50;
    settings.auth.identity_url = format!("http://{}", suite.identity);
    settings.orders.events_url = Some(format!("http://{}", suite.orders.as_ref().unwrap().addr));
    let keys = Arc::new(GrpcKeySource::new(channel(suite.identity).await));
    // The admin's token reads orders' log (`events.read`) for the test's length.
    let app = retail_channel_partner::Application::build_with_keys(settings, keys)
        .await
        .unwrap()
        .with_service_tokens(ServiceTokenSource::fixed(suite.admin.clone()));
    let addr = app.local_addr();
    tokio::spawn(app.run(std::future::pending()));
    (addr, database)
}

async fn place_partner_order(suite: &Suite, partner: &str, rep: &str, units: i64, request_id: &str) -> opb::Order {
    let order = suite
        .orders_client()
        .await
        .place_order(authed(
            &suite.admin,
            opb::PlaceOrderRequest {
                order: Some(opb::Order {
                    channel: opb::OrderChannel::Partner as i32,
                    partner_id: partner.into(),
                    sales_rep: rep.into(),
                    lines: vec![opb::OrderLine {
                        sku: "skus/PRO-1".into(),
                        quantity: units,
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                request_id: request_id.into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    suite
        .pay(&suite.admin, &order, &format!("pay-{request_id}"))
        .await
        .unwrap()
}

/// Ships and delivers `order`, then returns and refunds `units` of it.
async fn refund_units(suite: &Suite, order: &opb::Order, units: i64) {
    let admin = &suite.admin;
    let mut orders = suite.orders_client().await;
    orders
        .ship_order(authed(
            admin,
            opb::ShipOrderRequest {
                name: order.name.clone(),
                carrier: "dhl".into(),
                tracking_number: "JD0002".into(),
            },
        ))
        .await
        .unwrap();
    orders
        .add_tracking_event(authed(
            admin,
            opb::AddTrackingEventRequest {
                name: order.name.clone(),
                kind: opb::TrackingEventKind::Delivered as i32,
                event_time: None,
                detail: "door".into(),
            },
        ))
        .await
        .unwrap();
    let ret = orders
        .request_return(authed(
            admin,
            opb::RequestReturnRequest {
                parent: order.name.clone(),
                r#return: Some(opb::Return {
                    lines: vec![opb::ReturnLine {
                        sku: "skus/PRO-1".into(),
                        quantity: units,
                        damaged: false,
                    }],
                    reason: "surplus".into(),
                    ..Default::default()
                }),
                request_id: format!("ret-{}", order.name),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    orders
        .receive_return(authed(
            admin,
            opb::ReceiveReturnRequest {
                name: ret.name.clone(),
                damaged_skus: vec![],
            },
        ))
        .await
        .unwrap();
    orders
        .refund_return(authed(admin, opb::RefundReturnRequest { name: ret.name }))
        .await
        .unwrap();
}

#[tokio::test]
async fn partner_orders_move_targets_of_two_partners_and_two_reps_and_a_partial_refund_takes_its_share_back() {
    let suite = Suite::start().await;
    suite.stock_skus(&[("PRO-1", 100_00, 100)]).await;
    let (addr, _db) = start_partner(&suite).await;
    let channel = channel(addr).await;
    let mut partners = PartnerServiceClient::new(channel.clone());
    let mut targets = TargetServiceClient::new(channel);
    let admin = suite.admin.clone();

    let mut reps = Vec::new();
    for (id, user) in [
        ("acme", "0190f5b2-8d3e-7c41-9a6b-00000000000a"),
        ("bolt", "0190f5b2-8d3e-7c41-9a6b-00000000000b"),
    ] {
        partners
            .create_partner(authed(
                &admin,
                ppb::CreatePartnerRequest {
                    partner: Some(ppb::Partner {
                        display_name: format!("Dealer {id}"),
                        r#type: ppb::PartnerType::Dealer as i32,
                        region: "north".into(),
                        ..Default::default()
                    }),
                    partner_id: id.into(),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap();
        partners
            .activate_partner(authed(
                &admin,
                ppb::ActivatePartnerRequest {
                    name: format!("partners/{id}"),
                    reason: "admitted".into(),
                },
            ))
            .await
            .unwrap();
        let rep = partners
            .create_sales_rep(authed(
                &admin,
                ppb::CreateSalesRepRequest {
                    sales_rep: Some(ppb::SalesRep {
                        partner: format!("partners/{id}"),
                        user_id: user.into(),
                        display_name: format!("Rep of {id}"),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        reps.push(rep.name);
    }
    let rep_id = |i: usize| reps[i].trim_start_matches("salesReps/").to_owned();

    // This month's targets.
    let now = chrono::Utc::now();
    let month = format!("{}", now.format("%Y-%m-01"));
    let target = |subject: String, amount_minor: i64| {
        let month = month.clone();
        let admin = admin.clone();
        let mut targets = targets.clone();
        async move {
            targets
                .create_target(authed(
                    &admin,
                    ppb::CreateTargetRequest {
                        target: Some(ppb::Target {
                            subject,
                            period_kind: ppb::PeriodKind::Month as i32,
                            period_start: month,
                            amount_minor,
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
    };
    let acme_t = target("partners/acme".into(), 1_000_00).await;
    let bolt_t = target("partners/bolt".into(), 500_00).await;
    let rep_a_t = target(reps[0].clone(), 600_00).await;
    let rep_b_t = target(reps[1].clone(), 400_00).await;

    // acme: 3 units by its rep, 1 without a rep; bolt: 2 units by its rep.
    let big = place_partner_order(&suite, "acme", &rep_id(0), 3, "acme-1").await;
    place_partner_order(&suite, "acme", "", 1, "acme-2").await;
    place_partner_order(&suite, "bolt", &rep_id(1), 2, "bolt-1").await;
    // One of acme's three units comes back.
    refund_units(&suite, &big, 1).await;

    // Expected, in minor units.
    let acme = 3 * 100_00 + 100_00 - 100_00;
    let bolt = 2 * 100_00;
    let rep_a = 3 * 100_00 - 100_00;
    let rep_b = 2 * 100_00;
    let expect = [
        (&acme_t, acme, 1_000_00, 2),
        (&bolt_t, bolt, 500_00, 1),
        (&rep_a_t, rep_a, 600_00, 2),
        (&rep_b_t, rep_b, 400_00, 1),
    ];
    // Each partner's sales apply in their own partition: wait until every target
    // shows its final progress (acme's 300.00 is also its value before its second
    // order and the refund, so it is judged together with its rep's).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let mut all = true;
        for (name, progress, _, _) in expect {
            let t = targets
                .get_target(authed(&admin, ppb::GetTargetRequest { name: name.clone() }))
                .await
                .unwrap()
                .into_inner();
            all &= t.progress_minor == progress;
        }
        if all {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "progress never reached the expected values"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (name, progress, amount, rank) in expect {
        let before = chrono::Utc::now();
        let t = targets
            .get_target(authed(&admin, ppb::GetTargetRequest { name: name.clone() }))
            .await
            .unwrap()
            .into_inner();
        let after = chrono::Utc::now();
        assert_eq!(t.progress_minor, progress, "{name}");
        assert_eq!(t.attainment_bp, progress * 10_000 / amount, "{name}");
        assert_eq!(t.rank, rank, "{name}");
        assert_eq!(t.peer_count, 2, "{name}");
        assert!(t.attain_time.is_none());
        // Projection at the run rate: progress / elapsed x length of the month,
        // as of some instant during the call.
        let start = chrono::NaiveDate::parse_from_str(&month, "%Y-%m-%d")
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc();
        let end = start.checked_add_months(chrono::Months::new(1)).unwrap();
        let length = (end - start).num_milliseconds() as i128;
        let at = |instant: chrono::DateTime<chrono::Utc>| {
            (progress as i128 * length / (instant - start).num_milliseconds().max(1) as i128) as i64
        };
        assert!(
            (at(after)..=at(before)).contains(&t.projected_minor),
            "{name}: projection {} not within {}..={}",
            t.projected_minor,
            at(after),
            at(before)
        );
        assert!(t.projected_minor >= progress);
    }
}

/// A free loopback port (bound and released): channel-partner's, named to identity
/// before either starts.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Identity asks channel-partner about `partner_id`: no key or user for a partner
/// that does not exist or is terminated, and tokens for a partner's keys only while
/// the partner is active.
#[tokio::test]
async fn identity_issues_partner_keys_and_tokens_only_for_partners_of_the_programme_that_are_active() {
    use retail_proto::identity::identity_service_client::IdentityServiceClient;
    use retail_proto::identity::{self as ipb};
    use secrecy::SecretString;
    use tonic::Code;

    let (identity_db, partner_db) = (TestDatabase::new().await.unwrap(), TestDatabase::new().await.unwrap());
    let partner_port = free_port();
    let mut identity = retail_identity::Settings::default();
    identity.database.url = identity_db.secret_url();
    identity.database.max_connections = 6;
    identity.passwords.memory_kib = 256;
    identity.passwords.iterations = 1;
    identity.bootstrap.admin_password = SecretString::from(ADMIN_PASSWORD);
    identity.partners.url = Some(format!("http://127.0.0.1:{partner_port}"));
    let identity = retail_identity::Application::build(identity).await.unwrap();
    let identity_addr = identity.local_addr();
    tokio::spawn(identity.run(std::future::pending()));

    let mut partner = retail_channel_partner::Settings::default();
    partner.server.port = partner_port;
    partner.database.url = partner_db.secret_url();
    partner.database.max_connections = 6;
    let keys = Arc::new(GrpcKeySource::new(channel(identity_addr).await));
    let partner = retail_channel_partner::Application::build_with_keys(partner, keys)
        .await
        .unwrap();
    tokio::spawn(partner.run(std::future::pending()));

    let mut ids = IdentityServiceClient::new(channel(identity_addr).await);
    let admin = ids
        .login(ipb::LoginRequest {
            username: "admin".into(),
            password: ADMIN_PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap()
        .access_token;
    let mut partners = PartnerServiceClient::new(channel(SocketAddr::from(([127, 0, 0, 1], partner_port))).await);
    let create_key = |partner_id: &'static str| {
        let (mut ids, admin) = (ids.clone(), admin.clone());
        async move {
            ids.create_api_key(authed(
                &admin,
                ipb::CreateApiKeyRequest {
                    api_key: Some(ipb::ApiKey {
                        display_name: format!("POS of {partner_id}"),
                        partner_id: partner_id.into(),
                        scopes: vec!["partner.read".into()],
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .map(|r| r.into_inner())
        }
    };
    let exchange = |secret: String| {
        let mut ids = ids.clone();
        async move {
            ids.exchange_api_key(ipb::ExchangeApiKeyRequest { api_key: secret })
                .await
                .map(|r| r.into_inner())
        }
    };
    let partners_for_changes = partners.clone();
    let change = |rpc: &'static str| {
        let (mut partners, admin) = (partners_for_changes.clone(), admin.clone());
        async move {
            let (name, reason) = ("partners/acme".to_owned(), format!("{rpc} in the test"));
            match rpc {
                "activate" => partners
                    .activate_partner(authed(&admin, ppb::ActivatePartnerRequest { name, reason }))
                    .await
                    .map(drop),
                "suspend" => partners
                    .suspend_partner(authed(&admin, ppb::SuspendPartnerRequest { name, reason }))
                    .await
                    .map(drop),
                _ => partners
                    .terminate_partner(authed(&admin, ppb::TerminatePartnerRequest { name, reason }))
                    .await
                    .map(drop),
            }
            .unwrap();
        }
    };

    // No partner yet: no key.
    let err = create_key("acme").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    partners
        .create_partner(authed(
            &admin,
            ppb::CreatePartnerRequest {
                partner: Some(ppb::Partner {
                    display_name: "Acme".into(),
                    r#type: ppb::PartnerType::Agent as i32,
                    region: "north".into(),
                    ..Default::default()
                }),
                partner_id: "acme".into(),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    // Applied: the key can be made, not used.
    let key = create_key("acme").await.unwrap();
    let err = exchange(key.secret.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    change("activate").await;
    let tokens = exchange(key.secret.clone()).await.unwrap().tokens.unwrap();
    // The token is good at channel-partner, for its own partner.
    let own = partners
        .get_partner(authed(
            &tokens.access_token,
            ppb::GetPartnerRequest {
                name: "partners/acme".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.state, ppb::PartnerState::Active as i32);
    change("suspend").await;
    let err = exchange(key.secret.clone()).await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::PermissionDenied,
        "a suspended partner's key gets no token"
    );
    change("terminate").await;
    let err = create_key("acme").await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "no new key for a terminated partner"
    );
    let err = exchange(key.secret).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}
