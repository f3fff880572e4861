//! The partner gateway in front of the running suite: two partners each see only
//! their own organisation and orders (another partner's ids are not found and
//! change nothing), a terminated partner's key is refused, and bad input of every
//! kind is a 4xx problem document, never a 5xx.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::net::SocketAddr;

use futures::FutureExt;
use retail_proto::partner::partner_service_client::PartnerServiceClient;
use retail_suite::settings::SuiteSettings;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

/// One HTTP/1.1 exchange on a fresh connection.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }

    /// Asserts a problem document of `status` and returns it.
    fn problem(&self, status: u16) -> Value {
        assert_eq!(
            self.status,
            status,
            "expected {status}, got {}: {}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.header("content-type"), Some("application/problem+json"));
        let problem = self.json();
        assert_eq!(problem["status"], status);
        assert!(problem["type"].is_string() && problem["title"].is_string());
        problem
    }
}

async fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Reply {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    if let Some(body) = body {
        // A refused body may be cut short by the server; that is its right.
        let _ = stream.write_all(body).await;
    }
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("no HTTP head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Reply { status, headers, body }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(String::from_utf8_lossy(&raw[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw = &raw[eol + 2 + size + 2..];
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn connect(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn bearer<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", token.parse().unwrap());
    request
}

async fn api_key(identity: Channel, admin: &str, partner: &str) -> String {
    retail_suite::seed::partner_api_key(identity, admin, partner)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partners_reach_only_their_own_through_the_gateway() {
    const PASSWORD: &str = "Gateway-test-password-1";
    let dir = tempfile::tempdir().unwrap();
    let mut settings = SuiteSettings {
        data_dir: dir.path().to_path_buf(),
        ..SuiteSettings::default()
    };
    settings.relocate_data();
    // The gateway's limits go through Redis when there is one.
    settings.gateway.rate_limit.redis_url = retail_testkit::redis_url();
    // Room for every request of the test; the limit itself is tested below.
    settings.gateway.rate_limit.write = retail_gateway::settings::RateClass { rps: 100, burst: 1_000 };
    settings.use_free_ports();
    // Identity asks channel-partner about partners only at a known port.
    settings.partner.server.port = free_port();
    settings.identity.bootstrap.admin_password = secrecy::SecretString::from(PASSWORD);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    }
    .boxed()
    .shared();
    let launched = retail_suite::up::launch(&mut settings, shutdown).await.unwrap();
    let gw = launched.gateway;
    let identity = connect(launched.identity).await;
    let partner_channel = connect(launched.partner).await;
    let admin = retail_suite::seed::admin_bearer(identity.clone(), PASSWORD)
        .await
        .unwrap();
    let skus = retail_suite::seed::seed_catalog(connect(launched.catalog).await, &admin, 2, 2, 100, 1)
        .await
        .unwrap();
    let prefix = format!("gw{}", rand::random::<u32>());
    let partners = retail_suite::seed_partner::seed_partners(partner_channel.clone(), &admin, &prefix, 3, 1, 1_000, 1)
        .await
        .unwrap();
    let (a, b, c) = (&partners[0], &partners[1], &partners[2]);
    let key_a = api_key(identity.clone(), &admin, &a.id).await;
    let key_b = api_key(identity.clone(), &admin, &b.id).await;
    let key_c = api_key(identity.clone(), &admin, &c.id).await;
    PartnerServiceClient::new(partner_channel.clone())
        .terminate_partner(bearer(
            &admin,
            retail_proto::partner::TerminatePartnerRequest {
                name: format!("partners/{}", c.id),
                reason: "contract ended".into(),
            },
        ))
        .await
        .unwrap();
    let auth_a = format!("Bearer {key_a}");
    let as_a: &[(&str, &str)] = &[("Authorization", &auth_a)];
    let as_b: &[(&str, &str)] = &[("X-Api-Key", &key_b)];
    let json_a: &[(&str, &str)] = &[("Authorization", &auth_a), ("Content-Type", "application/json")];
    let json_b: &[(&str, &str)] = &[("X-Api-Key", &key_b), ("Content-Type", "application/json")];

    // The document describes every route, as OpenAPI 3.1.
    let doc = http(gw, "GET", "/v1/openapi.json", &[], None).await;
    assert_eq!(doc.status, 200);
    let doc = doc.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/v1/partner",
        "/v1/partner/salesReps",
        "/v1/products",
        "/v1/products/{productId}",
        "/v1/orders",
        "/v1/orders/{orderId}",
        "/v1/orders/{orderId}/pay",
        "/v1/orders/{orderId}/cancel",
        "/v1/orders/{orderId}/tracking",
        "/v1/orders/{orderId}/returns",
        "/v1/partner/targets",
        "/v1/partner/ledger",
        "/v1/partner/ledger/redemptions",
        "/v1/partner/priceEvaluations",
        "/v1/partner/specialDiscounts",
        "/v1/partner/dealLocks",
        "/v1/partner/dealLocks/{dealLockId}",
        "/v1/partner/dealLocks/{dealLockId}/release",
        "/v1/leads",
        "/v1/leads/{leadId}",
        "/v1/leads/{leadId}/accept",
        "/v1/leads/{leadId}/decline",
        "/v1/leads/{leadId}/outcome",
        "/v1/partner/opportunities",
        "/v1/partner/opportunities/{opportunityId}",
        "/v1/partner/opportunities/{opportunityId}/move",
        "/v1/partner/pipelineReport",
        "/v1/partner/quotes",
        "/v1/partner/quotes/{quoteId}",
        "/v1/partner/quotes/{quoteId}/accept",
        "/v1/partner/visits",
        "/v1/partner/visits/{visitId}/checkOut",
        "/v1/salesReps/{salesRepId}/home",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is not described");
    }
    assert_eq!(http(gw, "GET", "/healthz", &[], None).await.status, 200);

    // Each partner sees its own organisation and reps.
    let reply = http(gw, "GET", "/v1/partner", as_a, None).await;
    assert_eq!(reply.status, 200);
    assert!(reply.header("etag").is_some());
    assert_eq!(reply.json()["name"], format!("partners/{}", a.id));
    assert_eq!(reply.json()["state"], "PARTNER_STATE_ACTIVE");
    assert_eq!(
        http(gw, "GET", "/v1/partner", as_b, None).await.json()["name"],
        format!("partners/{}", b.id)
    );
    let reps = http(gw, "GET", "/v1/partner/salesReps?pageSize=10", as_a, None)
        .await
        .json();
    let reps: Vec<&str> = reps["salesReps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(reps, a.reps.iter().map(String::as_str).collect::<Vec<_>>());

    // Products with their stock.
    let products = http(gw, "GET", "/v1/products?pageSize=5", as_a, None).await;
    assert_eq!(products.status, 200);
    let products = products.json();
    let product = &products["products"][0];
    let product_id = product["productId"].as_str().unwrap();
    // The partner's level's wholesale prices, as catalog quotes them.
    let level = http(gw, "GET", "/v1/partner", as_a, None).await.json()["level"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut pricing =
        retail_proto::catalog::pricing_service_client::PricingServiceClient::new(connect(launched.catalog).await);
    let skus_of_product: Vec<String> = product["skus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    for sku in &skus_of_product {
        pricing
            .set_partner_price(bearer(
                &admin,
                retail_proto::catalog::SetPartnerPriceRequest {
                    partner_price: Some(retail_proto::catalog::PartnerPrice {
                        partner_level: level.clone(),
                        sku: sku.clone(),
                        price: Some(retail_proto::common::Money {
                            currency_code: "EUR".into(),
                            amount_minor: 1_500,
                        }),
                    }),
                },
            ))
            .await
            .unwrap();
    }
    let one = http(gw, "GET", &format!("/v1/products/{product_id}"), as_a, None).await;
    assert_eq!(one.status, 200);
    let one = one.json();
    assert!(one["skus"][0]["sellableQuantity"].is_string());
    assert_eq!(one["skus"][0]["partnerUnitPrice"]["amountMinor"], "1500", "{one}");
    assert!(one["skus"][0]["listUnitPrice"]["amountMinor"].is_string(), "{one}");

    // A places an order; the same Idempotency-Key returns the same order.
    let body = json!({"lines": [{"sku": skus[0], "quantity": 1}]}).to_string();
    let mut with_key = json_a.to_vec();
    with_key.push(("Idempotency-Key", "order-1"));
    let placed = http(gw, "POST", "/v1/orders", &with_key, Some(body.as_bytes())).await;
    assert_eq!(placed.status, 201, "{}", String::from_utf8_lossy(&placed.body));
    let order = placed.json();
    let order_id = order["orderId"].as_str().unwrap().to_owned();
    assert_eq!(order["partnerId"], a.id);
    assert_eq!(order["state"], "ORDER_STATE_PENDING_PAYMENT");
    let replay = http(gw, "POST", "/v1/orders", &with_key, Some(body.as_bytes())).await;
    assert_eq!(replay.json()["orderId"], order_id.as_str());

    // B cannot name A's order: not found, and nothing changes.
    let path = format!("/v1/orders/{order_id}");
    http(gw, "GET", &path, as_b, None).await.problem(404);
    let cancel = json!({"reason": "not mine"}).to_string();
    http(gw, "POST", &format!("{path}/cancel"), json_b, Some(cancel.as_bytes()))
        .await
        .problem(404);
    let pay = json!({"reference": "psp-1", "amount": order["total"]}).to_string();
    http(gw, "POST", &format!("{path}/pay"), json_b, Some(pay.as_bytes()))
        .await
        .problem(404);
    http(gw, "GET", &format!("{path}/tracking"), as_b, None)
        .await
        .problem(404);
    let give_back = json!({"lines": [{"sku": skus[0], "quantity": 1}], "reason": "not mine"}).to_string();
    http(
        gw,
        "POST",
        &format!("{path}/returns"),
        json_b,
        Some(give_back.as_bytes()),
    )
    .await
    .problem(404);
    let listed_b = http(gw, "GET", "/v1/orders", as_b, None).await.json();
    assert!(listed_b["orders"].as_array().unwrap().is_empty());
    let still = http(gw, "GET", &path, as_a, None).await;
    assert_eq!(still.status, 200);
    assert_eq!(still.json()["state"], "ORDER_STATE_PENDING_PAYMENT");
    let listed_a = http(gw, "GET", "/v1/orders?pageSize=10", as_a, None).await.json();
    assert_eq!(listed_a["orders"][0]["orderId"], order_id.as_str());

    // A partner user's own token passes through: B's user sees B's orders, not A's.
    let user_password = "Partner-user-password-1";
    let mut identity_client =
        retail_proto::identity::identity_service_client::IdentityServiceClient::new(identity.clone());
    identity_client
        .create_user(bearer(
            &admin,
            retail_proto::identity::CreateUserRequest {
                user: Some(retail_proto::identity::User {
                    username: format!("{}.buyer", b.id.to_lowercase()),
                    display_name: "B's buyer".into(),
                    kind: retail_proto::identity::PrincipalKind::PartnerUser as i32,
                    partner_id: b.id.clone(),
                    ..Default::default()
                }),
                password: user_password.into(),
                request_id: uuid::Uuid::new_v4().to_string(),
            },
        ))
        .await
        .unwrap();
    let user_token = identity_client
        .login(retail_proto::identity::LoginRequest {
            username: format!("{}.buyer", b.id.to_lowercase()),
            password: user_password.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap()
        .access_token;
    let as_user = format!("Bearer {user_token}");
    let user_headers: &[(&str, &str)] = &[("Authorization", &as_user)];
    assert_eq!(
        http(gw, "GET", "/v1/partner", user_headers, None).await.json()["name"],
        format!("partners/{}", b.id)
    );
    http(gw, "GET", &path, user_headers, None).await.problem(404);
    http(
        gw,
        "GET",
        "/v1/partner",
        &[("Authorization", "Bearer not-a-token")],
        None,
    )
    .await
    .problem(401);

    // If-Match: a stale version is refused, the current one accepted.
    let etag = still.header("etag").unwrap().to_owned();
    let mut stale = json_a.to_vec();
    stale.push(("If-Match", "\"1.000000000\""));
    http(gw, "POST", &format!("{path}/pay"), &stale, Some(pay.as_bytes()))
        .await
        .problem(412);
    let mut current = json_a.to_vec();
    current.push(("If-Match", &etag));
    let paid = http(gw, "POST", &format!("{path}/pay"), &current, Some(pay.as_bytes())).await;
    assert_eq!(paid.status, 200, "{}", String::from_utf8_lossy(&paid.body));
    assert_eq!(paid.json()["state"], "ORDER_STATE_PAID");
    let tracking = http(gw, "GET", &format!("{path}/tracking"), as_a, None).await;
    assert_eq!(tracking.status, 200);
    let kinds: Vec<String> = tracking.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["placed", "paid"]);
    // Not delivered yet: a return is refused with a conflict, not a 5xx.
    http(
        gw,
        "POST",
        &format!("{path}/returns"),
        json_a,
        Some(give_back.as_bytes()),
    )
    .await
    .problem(409);

    // The programme: A's own target, ledger and reps' ledgers; B reaches none of them.
    let target_id = a.target.strip_prefix("targets/").unwrap();
    let targets = http(gw, "GET", "/v1/partner/targets", as_a, None).await.json();
    assert!(
        targets["targets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == a.target.as_str()),
        "{targets}"
    );
    let target = http(gw, "GET", &format!("/v1/targets/{target_id}"), as_a, None).await;
    assert_eq!(target.status, 200, "{}", String::from_utf8_lossy(&target.body));
    assert_eq!(target.json()["subject"], format!("partners/{}", a.id));
    http(gw, "GET", &format!("/v1/targets/{target_id}"), as_b, None)
        .await
        .problem(404);
    let targets_b = http(gw, "GET", "/v1/partner/targets", as_b, None).await.json();
    assert!(
        !targets_b["targets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == a.target.as_str())
    );
    let ledger = http(gw, "GET", "/v1/partner/ledger", as_a, None).await;
    assert_eq!(ledger.status, 200, "{}", String::from_utf8_lossy(&ledger.body));
    assert_eq!(ledger.json()["name"], format!("partners/{}/ledger", a.id));
    let rep_id = a.reps[0].strip_prefix("salesReps/").unwrap();
    let rep_ledger = http(gw, "GET", &format!("/v1/salesReps/{rep_id}/ledger"), as_a, None).await;
    assert_eq!(rep_ledger.status, 200, "{}", String::from_utf8_lossy(&rep_ledger.body));
    http(gw, "GET", &format!("/v1/salesReps/{rep_id}/ledger"), as_b, None)
        .await
        .problem(404);
    assert_eq!(
        http(gw, "GET", "/v1/partner/ledger/entries", as_a, None).await.status,
        200
    );
    assert_eq!(
        http(gw, "GET", "/v1/partner/ledger/redemptions", as_a, None)
            .await
            .status,
        200
    );
    assert_eq!(http(gw, "GET", "/v1/catalogItems", as_a, None).await.status, 200);
    // Redeeming without points is refused, and says why.
    let redeem = json!({"catalogItem": "catalogItems/none", "quantity": 1}).to_string();
    let refused = http(
        gw,
        "POST",
        "/v1/partner/ledger/redemptions",
        json_a,
        Some(redeem.as_bytes()),
    )
    .await;
    assert!(
        (400..500).contains(&refused.status),
        "{}",
        String::from_utf8_lossy(&refused.body)
    );

    // Who may call: a terminated partner's key, no credentials, a staff token.
    http(gw, "GET", "/v1/partner", &[("X-Api-Key", &key_c)], None)
        .await
        .problem(401);
    http(gw, "GET", "/v1/partner", &[], None).await.problem(401);
    http(gw, "GET", "/v1/partner", &[("X-Api-Key", "rk_nope_nope")], None)
        .await
        .problem(401);
    http(gw, "GET", "/v1/partner", &[("Authorization", &admin)], None)
        .await
        .problem(403);

    // Bad input is a 4xx problem naming the field.
    let reply = http(gw, "POST", "/v1/orders", json_a, Some(b"{\"lines\": [")).await;
    reply.problem(400);
    let reply = http(
        gw,
        "POST",
        "/v1/orders",
        json_a,
        Some(
            json!({"lines": [{"sku": skus[0], "quantity": "many"}]})
                .to_string()
                .as_bytes(),
        ),
    )
    .await;
    assert_eq!(reply.problem(400)["violations"][0]["field"], "lines[0].quantity");
    let reply = http(
        gw,
        "POST",
        "/v1/orders",
        json_a,
        Some(json!({"lines": [], "bogus": 1}).to_string().as_bytes()),
    )
    .await;
    assert!(
        reply.problem(400)["violations"][0]["description"]
            .as_str()
            .unwrap()
            .contains("bogus")
    );
    let reply = http(
        gw,
        "POST",
        "/v1/orders",
        json_a,
        Some(
            json!({"lines": [{"sku": skus[0], "quantity": 0}]})
                .to_string()
                .as_bytes(),
        ),
    )
    .await;
    assert!(!reply.problem(400)["violations"].as_array().unwrap().is_empty());
    let huge = vec![b' '; 1024 * 1024];
    http(gw, "POST", "/v1/orders", json_a, Some(&huge)).await.problem(413);
    http(gw, "POST", "/v1/orders", as_a, Some(b"{}")).await.problem(415);
    http(gw, "GET", "/v1/orders?pageSize=9999", as_a, None)
        .await
        .problem(400);
    http(gw, "GET", "/v1/orders?pageSize=x", as_a, None).await.problem(400);
    http(gw, "GET", "/v1/orders?colour=red", as_a, None).await.problem(400);
    http(gw, "GET", "/v1/nowhere", as_a, None).await.problem(404);
    http(gw, "DELETE", "/v1/orders", as_a, None).await.problem(405);
    let mut bad_key = json_a.to_vec();
    bad_key.push(("Idempotency-Key", ""));
    http(gw, "POST", "/v1/orders", &bad_key, Some(body.as_bytes()))
        .await
        .problem(400);

    // The request id is echoed, or made up.
    let reply = http(gw, "GET", "/healthz", &[("X-Request-Id", "abc-123")], None).await;
    assert_eq!(reply.header("x-request-id"), Some("abc-123"));
    assert!(
        http(gw, "GET", "/healthz", &[], None)
            .await
            .header("x-request-id")
            .is_some()
    );
    // Rate-limit headers on every partner request.
    let reply = http(gw, "GET", "/v1/partner", as_a, None).await;
    assert!(reply.header("ratelimit-limit").is_some() && reply.header("ratelimit-remaining").is_some());

    // Policy: a basket priced for A's level; a special discount only A can read.
    let basket = json!({"lines": [{"sku": "RUN-42", "unitPriceMinor": "12900", "quantity": 2}]}).to_string();
    let priced = http(
        gw,
        "POST",
        "/v1/partner/priceEvaluations",
        json_a,
        Some(basket.as_bytes()),
    )
    .await;
    assert_eq!(priced.status, 200, "{}", String::from_utf8_lossy(&priced.body));
    assert_eq!(priced.json()["grossMinor"], "25800");
    let ask = json!({"reference": "basket-1", "rateBp": 100, "reason": "competing offer"}).to_string();
    let asked = http(gw, "POST", "/v1/partner/specialDiscounts", json_a, Some(ask.as_bytes())).await;
    assert_eq!(asked.status, 201, "{}", String::from_utf8_lossy(&asked.body));
    let discount_id = asked.json()["specialDiscountId"].as_str().unwrap().to_owned();
    let discount_path = format!("/v1/partner/specialDiscounts/{discount_id}");
    assert_eq!(http(gw, "GET", &discount_path, as_a, None).await.status, 200);
    http(gw, "GET", &discount_path, as_b, None).await.problem(404);
    let listed = http(gw, "GET", "/v1/partner/specialDiscounts", as_b, None).await.json();
    assert!(listed["specialDiscounts"].as_array().unwrap().is_empty());

    sales_routes_reach_only_the_callers_own(gw, partner_channel.clone(), &admin, a, &key_a, &key_b).await;
    quotes_reach_only_the_callers_own(
        gw,
        partner_channel.clone(),
        &admin,
        (&level, &skus_of_product[0]),
        &key_a,
        &key_b,
    )
    .await;

    rate_limits_are_shared_by_replicas(&settings.gateway, &key_a, &key_b).await;

    let _ = stop.send(());
    launched.wait().await.unwrap();
}

/// The sales routes: each partner registers locks, works leads and
/// opportunities and checks its reps in; every id route named with the other
/// partner's id is a 404 and changes nothing.
async fn sales_routes_reach_only_the_callers_own(
    gw: SocketAddr,
    partner_channel: Channel,
    admin: &str,
    a: &retail_suite::seed_partner::SeededPartner,
    key_a: &str,
    key_b: &str,
) {
    use retail_proto::partner::lead_service_client::LeadServiceClient;
    let as_a: &[(&str, &str)] = &[("X-Api-Key", key_a)];
    let as_b: &[(&str, &str)] = &[("X-Api-Key", key_b)];
    let json_a: &[(&str, &str)] = &[("X-Api-Key", key_a), ("Content-Type", "application/json")];
    let json_b: &[(&str, &str)] = &[("X-Api-Key", key_b), ("Content-Type", "application/json")];
    let post = |path: String, headers: &'static str, body: Value| async move {
        let headers = if headers == "a" { json_a } else { json_b };
        http(gw, "POST", &path, headers, Some(body.to_string().as_bytes())).await
    };
    let reason = json!({"reason": "not mine"});

    // Deal locks: A registers (idempotently), B can neither read nor release it.
    let customer = json!({"displayName": "Gateway Sports Club", "region": "DE-BE"});
    let new_lock = json!({"subjectKind": "DEAL_SUBJECT_KIND_CUSTOMER", "customer": customer}).to_string();
    let mut with_key = json_a.to_vec();
    with_key.push(("Idempotency-Key", "lock-1"));
    let lock = http(
        gw,
        "POST",
        "/v1/partner/dealLocks",
        &with_key,
        Some(new_lock.as_bytes()),
    )
    .await;
    assert_eq!(lock.status, 201, "{}", String::from_utf8_lossy(&lock.body));
    let lock = lock.json();
    assert_eq!(lock["state"], "DEAL_LOCK_STATE_ACTIVE");
    let lock_id = lock["dealLockId"].as_str().unwrap().to_owned();
    let replay = http(
        gw,
        "POST",
        "/v1/partner/dealLocks",
        &with_key,
        Some(new_lock.as_bytes()),
    )
    .await;
    assert_eq!(replay.json()["dealLockId"], lock_id.as_str());
    // The same customer for B: a conflict that does not name A.
    let taken = http(gw, "POST", "/v1/partner/dealLocks", json_b, Some(new_lock.as_bytes())).await;
    let taken = taken.problem(409);
    assert!(!taken.to_string().contains(&a.id), "{taken}");
    let lock_path = format!("/v1/partner/dealLocks/{lock_id}");
    http(gw, "GET", &lock_path, as_b, None).await.problem(404);
    post(format!("{lock_path}/release"), "b", reason.clone())
        .await
        .problem(404);
    let locks_b = http(gw, "GET", "/v1/partner/dealLocks", as_b, None).await.json();
    assert!(locks_b["dealLocks"].as_array().unwrap().is_empty(), "{locks_b}");
    let still = http(gw, "GET", &lock_path, as_a, None).await;
    assert_eq!(still.status, 200);
    assert_eq!(still.json()["state"], "DEAL_LOCK_STATE_ACTIVE");
    let active = http(
        gw,
        "GET",
        "/v1/partner/dealLocks?state=DEAL_LOCK_STATE_ACTIVE",
        as_a,
        None,
    )
    .await
    .json();
    assert_eq!(active["dealLocks"][0]["dealLockId"], lock_id.as_str());
    http(gw, "GET", "/v1/partner/dealLocks?state=OPEN", as_a, None)
        .await
        .problem(400);
    http(gw, "GET", "/v1/partner/dealLocks/not-a-uuid", as_a, None)
        .await
        .problem(400);
    let bad = json!({"subjectKind": "DEAL_SUBJECT_KIND_CUSTOMER", "customer": {"displayName": "", "region": "DE-BE"}});
    let bad = post("/v1/partner/dealLocks".into(), "a", bad).await;
    assert_eq!(bad.problem(400)["violations"][0]["field"], "customer.displayName");
    let released = post(
        format!("{lock_path}/release"),
        "a",
        json!({"reason": "customer went elsewhere"}),
    )
    .await;
    assert_eq!(released.status, 200, "{}", String::from_utf8_lossy(&released.body));
    assert_eq!(released.json()["state"], "DEAL_LOCK_STATE_RELEASED");
    post(format!("{lock_path}/release"), "a", reason.clone())
        .await
        .problem(409);

    // Leads: the brand's two leads in A's region are offered to A; B reaches neither.
    let mut leads = LeadServiceClient::new(partner_channel);
    let mut lead_ids = Vec::new();
    for i in 0..2 {
        let lead = leads
            .create_lead(bearer(
                admin,
                retail_proto::partner::CreateLeadRequest {
                    lead: Some(retail_proto::partner::Lead {
                        customer: Some(retail_proto::partner::Customer {
                            display_name: format!("Lead customer {i}"),
                            region: "DE-BE".into(),
                            tax_id: String::new(),
                        }),
                        customer_class: retail_proto::partner::CustomerClass::B as i32,
                        annual_budget_minor: 5_000_000,
                        financial_trend: retail_proto::partner::FinancialTrend::Stable as i32,
                        authority_score: 3,
                        need_score: 4,
                        need: "kit for a club".into(),
                        ..Default::default()
                    }),
                    request_id: uuid::Uuid::new_v4().to_string(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(lead.partner, format!("partners/{}", a.id), "{lead:?}");
        lead_ids.push(lead.name.strip_prefix("leads/").unwrap().to_owned());
    }
    let listed = http(gw, "GET", "/v1/leads?state=LEAD_STATE_OFFERED", as_a, None)
        .await
        .json();
    assert_eq!(listed["leads"].as_array().unwrap().len(), 2, "{listed}");
    assert!(listed["leads"][0]["annualBudgetMinor"].is_string());
    let listed_b = http(gw, "GET", "/v1/leads", as_b, None).await.json();
    assert!(listed_b["leads"].as_array().unwrap().is_empty(), "{listed_b}");
    for id in &lead_ids {
        let path = format!("/v1/leads/{id}");
        http(gw, "GET", &path, as_b, None).await.problem(404);
        post(format!("{path}/accept"), "b", json!({})).await.problem(404);
        http(gw, "POST", &format!("{path}/accept"), as_b, None)
            .await
            .problem(404);
        post(format!("{path}/decline"), "b", reason.clone()).await.problem(404);
        post(format!("{path}/outcome"), "b", json!({"won": true}))
            .await
            .problem(404);
        let lead = http(gw, "GET", &path, as_a, None).await;
        assert_eq!(lead.status, 200, "{}", String::from_utf8_lossy(&lead.body));
        assert_eq!(lead.json()["state"], "LEAD_STATE_OFFERED");
    }
    let first = format!("/v1/leads/{}", lead_ids[0]);
    let accepted = http(gw, "POST", &format!("{first}/accept"), as_a, None).await;
    assert_eq!(accepted.status, 200, "{}", String::from_utf8_lossy(&accepted.body));
    assert_eq!(accepted.json()["state"], "LEAD_STATE_ACCEPTED");
    let lost = post(format!("{first}/outcome"), "a", json!({"won": false})).await;
    assert_eq!(lost.problem(400)["violations"][0]["field"], "reason");
    let won = post(format!("{first}/outcome"), "a", json!({"won": true})).await;
    assert_eq!(won.status, 200, "{}", String::from_utf8_lossy(&won.body));
    assert_eq!(won.json()["state"], "LEAD_STATE_WON");
    let declined = post(
        format!("/v1/leads/{}/decline", lead_ids[1]),
        "a",
        json!({"reason": "no capacity"}),
    )
    .await;
    assert_eq!(declined.status, 200, "{}", String::from_utf8_lossy(&declined.body));

    // Opportunities: B reaches none of A's; a stale If-Match is refused.
    let new = json!({"title": "Club kit", "customer": customer, "salesRep": a.reps[0], "amountMinor": "250000"});
    let created = post("/v1/partner/opportunities".into(), "a", new).await;
    assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));
    let etag = created.header("etag").unwrap().to_owned();
    let created = created.json();
    assert_eq!(created["stage"], "PIPELINE_STAGE_IDENTIFIED");
    let opportunity_path = format!(
        "/v1/partner/opportunities/{}",
        created["opportunityId"].as_str().unwrap()
    );
    http(gw, "GET", &opportunity_path, as_b, None).await.problem(404);
    let forward = json!({"stage": "PIPELINE_STAGE_PROPOSED"});
    post(format!("{opportunity_path}/move"), "b", forward.clone())
        .await
        .problem(404);
    let opportunities_b = http(gw, "GET", "/v1/partner/opportunities", as_b, None).await.json();
    assert!(opportunities_b["opportunities"].as_array().unwrap().is_empty());
    // B's opportunity cannot name A's rep.
    let foreign = json!({"title": "Not mine", "customer": customer, "salesRep": a.reps[0]});
    let foreign = post("/v1/partner/opportunities".into(), "b", foreign).await;
    assert!(
        (400..500).contains(&foreign.status),
        "{}",
        String::from_utf8_lossy(&foreign.body)
    );
    let skip = post(
        format!("{opportunity_path}/move"),
        "a",
        json!({"stage": "PIPELINE_STAGE_WON"}),
    )
    .await;
    skip.problem(409);
    let unchanged = http(gw, "GET", &opportunity_path, as_a, None).await;
    assert_eq!(unchanged.json()["stage"], "PIPELINE_STAGE_IDENTIFIED");
    let mut stale = json_a.to_vec();
    stale.push(("If-Match", "\"1.000000000\""));
    http(
        gw,
        "POST",
        &format!("{opportunity_path}/move"),
        &stale,
        Some(forward.to_string().as_bytes()),
    )
    .await
    .problem(412);
    let mut current = json_a.to_vec();
    current.push(("If-Match", &etag));
    let moved = http(
        gw,
        "POST",
        &format!("{opportunity_path}/move"),
        &current,
        Some(forward.to_string().as_bytes()),
    )
    .await;
    assert_eq!(moved.status, 200, "{}", String::from_utf8_lossy(&moved.body));
    assert_eq!(moved.json()["stage"], "PIPELINE_STAGE_PROPOSED");
    assert_eq!(moved.json()["stageChanges"].as_array().unwrap().len(), 2);
    let report = http(gw, "GET", "/v1/partner/pipelineReport", as_a, None).await;
    assert_eq!(report.status, 200, "{}", String::from_utf8_lossy(&report.body));
    assert_eq!(report.json()["partner"], format!("partners/{}", a.id));
    http(
        gw,
        "GET",
        &format!("/v1/partner/pipelineReport?salesRep={}", a.reps[0]),
        as_b,
        None,
    )
    .await
    .problem(404);

    // Visits and the rep's home: B reaches neither A's visit nor A's rep.
    let visit = json!({"salesRep": a.reps[0], "customer": {"displayName": "Gateway Sports Club", "region": "DE-BE"}, "place": "Club house"});
    let visit = post("/v1/partner/visits".into(), "a", visit).await;
    assert_eq!(visit.status, 201, "{}", String::from_utf8_lossy(&visit.body));
    let visit_id = visit.json()["visitId"].as_str().unwrap().to_owned();
    let check_out = format!("/v1/partner/visits/{visit_id}/checkOut");
    http(gw, "POST", &check_out, as_b, None).await.problem(404);
    let foreign =
        json!({"salesRep": a.reps[0], "customer": {"displayName": "X", "region": "DE-HH"}, "place": "Street"});
    let foreign = post("/v1/partner/visits".into(), "b", foreign).await;
    assert!(
        (400..500).contains(&foreign.status),
        "{}",
        String::from_utf8_lossy(&foreign.body)
    );
    http(
        gw,
        "GET",
        &format!("/v1/partner/visits?salesRep={}", a.reps[0]),
        as_b,
        None,
    )
    .await
    .problem(404);
    let visits_b = http(gw, "GET", "/v1/partner/visits", as_b, None).await.json();
    assert!(visits_b["visits"].as_array().unwrap().is_empty(), "{visits_b}");
    let visits_a = http(gw, "GET", "/v1/partner/visits", as_a, None).await.json();
    assert_eq!(visits_a["visits"][0]["visitId"], visit_id.as_str());
    assert!(visits_a["visits"][0]["checkOutTime"].is_null(), "{visits_a}");
    let out = http(gw, "POST", &check_out, as_a, None).await;
    assert_eq!(out.status, 200, "{}", String::from_utf8_lossy(&out.body));
    assert!(out.json()["checkOutTime"].is_string());
    http(gw, "POST", &check_out, as_a, None).await.problem(409);
    let rep_id = a.reps[0].strip_prefix("salesReps/").unwrap();
    let home = http(gw, "GET", &format!("/v1/salesReps/{rep_id}/home"), as_a, None).await;
    assert_eq!(home.status, 200, "{}", String::from_utf8_lossy(&home.body));
    let home = home.json();
    assert_eq!(home["visitsThisWeek"], 1, "{home}");
    assert_eq!(
        home["openOpportunities"][0]["stage"], "PIPELINE_STAGE_PROPOSED",
        "{home}"
    );
    http(gw, "GET", &format!("/v1/salesReps/{rep_id}/home"), as_b, None)
        .await
        .problem(404);
}

/// Quotes: A quotes its opportunity for a SKU on its level's wholesale list
/// (15.00) within the brand's range; B neither reads nor accepts it, and A's
/// acceptance places its order.
async fn quotes_reach_only_the_callers_own(
    gw: SocketAddr,
    partner_channel: Channel,
    admin: &str,
    (level, sku): (&str, &str),
    key_a: &str,
    key_b: &str,
) {
    use retail_proto::partner::quote_service_client::QuoteServiceClient;
    let as_a: &[(&str, &str)] = &[("X-Api-Key", key_a)];
    let as_b: &[(&str, &str)] = &[("X-Api-Key", key_b)];
    let json_a: &[(&str, &str)] = &[("X-Api-Key", key_a), ("Content-Type", "application/json")];
    let json_b: &[(&str, &str)] = &[("X-Api-Key", key_b), ("Content-Type", "application/json")];
    let post = |path: String, headers: &'static str, body: Value| async move {
        let headers = if headers == "a" { json_a } else { json_b };
        http(gw, "POST", &path, headers, Some(body.to_string().as_bytes())).await
    };
    // Class A, new customers, any volume: 5% to 20% off list.
    QuoteServiceClient::new(partner_channel)
        .set_price_range(bearer(
            admin,
            retail_proto::partner::SetPriceRangeRequest {
                price_range: Some(retail_proto::partner::PriceRange {
                    level: level.into(),
                    customer_class: retail_proto::partner::CustomerClass::A.into(),
                    relationship: retail_proto::partner::CustomerRelationship::New.into(),
                    volume_from_minor: 0,
                    min_discount_bp: 500,
                    max_discount_bp: 2_000,
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap();
    let customer = json!({"displayName": "Quoted Sports Club", "region": "DE-BE"});
    let opportunity = post(
        "/v1/partner/opportunities".into(),
        "a",
        json!({"title": "Quoted kit", "customer": customer}),
    )
    .await;
    assert_eq!(
        opportunity.status,
        201,
        "{}",
        String::from_utf8_lossy(&opportunity.body)
    );
    let opportunity_id = opportunity.json()["opportunityId"].as_str().unwrap().to_owned();
    let new_quote = json!({
        "opportunityId": opportunity_id,
        "customerClass": "CUSTOMER_CLASS_A",
        "relationship": "CUSTOMER_RELATIONSHIP_NEW",
        "expectedVolumeMinor": "100000",
        "lines": [{"sku": sku, "quantity": 2, "unitPriceMinor": "1400"}],
    })
    .to_string();
    let mut with_key = json_a.to_vec();
    with_key.push(("Idempotency-Key", "quote-1"));
    let quote = http(gw, "POST", "/v1/partner/quotes", &with_key, Some(new_quote.as_bytes())).await;
    assert_eq!(quote.status, 201, "{}", String::from_utf8_lossy(&quote.body));
    let quote = quote.json();
    assert_eq!(quote["state"], "QUOTE_STATE_ISSUED", "{quote}");
    assert_eq!(quote["lines"][0]["listPriceMinor"], "1500", "{quote}");
    assert_eq!(quote["totalMinor"], "2800", "{quote}");
    let quote_id = quote["quoteId"].as_str().unwrap().to_owned();
    let replay = http(gw, "POST", "/v1/partner/quotes", &with_key, Some(new_quote.as_bytes())).await;
    assert_eq!(replay.json()["quoteId"], quote_id.as_str());

    // B reaches none of it, and changes nothing.
    let quote_path = format!("/v1/partner/quotes/{quote_id}");
    http(gw, "GET", &quote_path, as_b, None).await.problem(404);
    http(gw, "POST", &format!("{quote_path}/accept"), as_b, None)
        .await
        .problem(404);
    let quotes_b = http(gw, "GET", "/v1/partner/quotes", as_b, None).await.json();
    assert!(quotes_b["quotes"].as_array().unwrap().is_empty(), "{quotes_b}");
    let foreign = http(gw, "POST", "/v1/partner/quotes", json_b, Some(new_quote.as_bytes())).await;
    assert!(
        (400..500).contains(&foreign.status),
        "{}",
        String::from_utf8_lossy(&foreign.body)
    );
    let still = http(gw, "GET", &quote_path, as_a, None).await;
    assert_eq!(still.status, 200, "{}", String::from_utf8_lossy(&still.body));
    assert_eq!(still.json()["state"], "QUOTE_STATE_ISSUED");
    assert_eq!(still.json()["order"], "");

    // Bad input is a 400 problem naming the field.
    http(gw, "GET", "/v1/partner/quotes/not-a-uuid", as_a, None)
        .await
        .problem(400);
    http(gw, "GET", "/v1/partner/quotes?state=OPEN", as_a, None)
        .await
        .problem(400);
    let bad = json!({"opportunityId": "nope", "customerClass": "CUSTOMER_CLASS_A",
        "relationship": "CUSTOMER_RELATIONSHIP_NEW", "lines": []});
    let bad = post("/v1/partner/quotes".into(), "a", bad).await;
    assert_eq!(bad.problem(400)["violations"][0]["field"], "opportunityId");
    let empty = json!({"opportunityId": opportunity_id, "customerClass": "CUSTOMER_CLASS_A",
        "relationship": "CUSTOMER_RELATIONSHIP_NEW", "lines": []});
    let empty = post("/v1/partner/quotes".into(), "a", empty).await;
    assert_eq!(empty.problem(400)["violations"][0]["field"], "lines");

    // A accepts: the quote names its order.
    let accepted = http(gw, "POST", &format!("{quote_path}/accept"), as_a, None).await;
    assert_eq!(accepted.status, 200, "{}", String::from_utf8_lossy(&accepted.body));
    let accepted = accepted.json();
    assert_eq!(accepted["state"], "QUOTE_STATE_ACCEPTED", "{accepted}");
    assert!(accepted["order"].as_str().unwrap().starts_with("orders/"), "{accepted}");
    let listed = http(gw, "GET", "/v1/partner/quotes?state=QUOTE_STATE_ACCEPTED", as_a, None)
        .await
        .json();
    assert_eq!(listed["quotes"][0]["quoteId"], quote_id.as_str(), "{listed}");
    assert_eq!(listed["quotes"][0]["order"], accepted["order"]);
}

/// A clock that stands still: what is admitted is one burst, whatever the timing.
#[derive(Debug)]
struct Frozen;

impl retail_gateway::ratelimit::Clock for Frozen {
    fn now_micros(&self) -> Option<u64> {
        Some(1_000_000_000)
    }
    fn local_micros(&self) -> u64 {
        1_000_000_000
    }
}

/// Two more gateway replicas with a small limit (burst 4, 2 replicas), on Redis
/// when the tests have one and each on its share otherwise: together they admit
/// one burst per partner at one instant, then 429 with Retry-After.
async fn rate_limits_are_shared_by_replicas(base: &retail_gateway::Settings, key_a: &str, key_b: &str) {
    use retail_gateway::settings::RateClass;
    let mut settings = base.clone();
    settings.server.port = 0;
    settings.rate_limit.replicas = 2;
    // Their own keys: the suite's gateway counted on Redis's clock, these on a frozen one.
    settings.rate_limit.namespace = format!("test-gw-{}", uuid::Uuid::new_v4());
    settings.rate_limit.read = RateClass { rps: 1, burst: 4 };
    let mut replicas = Vec::new();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    for _ in 0..2 {
        let app = retail_gateway::Application::build_with_clock(settings.clone(), std::sync::Arc::new(Frozen))
            .await
            .unwrap();
        let addr = app.local_addr();
        let mut stopped = stopped.clone();
        tokio::spawn(app.run(async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
        replicas.push(addr);
    }
    for key in [key_a, key_b] {
        let mut admitted = 0;
        let mut refused = None;
        for i in 0..12 {
            let reply = http(replicas[i % 2], "GET", "/v1/partner", &[("X-Api-Key", key)], None).await;
            match reply.status {
                200 => admitted += 1,
                429 => refused = Some(reply),
                other => panic!("unexpected {other}: {}", String::from_utf8_lossy(&reply.body)),
            }
        }
        assert_eq!(admitted, 4, "one burst between both replicas");
        let refused = refused.unwrap();
        refused.problem(429);
        assert!(refused.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
        assert_eq!(refused.header("ratelimit-remaining"), Some("0"));
    }
    let _ = stop.send(true);
}
