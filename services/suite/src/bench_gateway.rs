//! `gateway-get-order`: a partner system reading one of its orders through the
//! partner gateway (HTTP/1.1 keep-alive, one connection per worker): API-key
//! authentication from the gateway's token cache, the rate limit, a gRPC GetOrder
//! with the partner's token, and the JSON of the answer. In the same run, in
//! alternating slices, the same `GetOrder` straight to orders over gRPC with the
//! partner's token (the token the gateway exchanges the key for): what the
//! gateway adds is the difference.

use std::sync::Arc;

use anyhow::Context;
use secrecy::SecretString;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::{BENCH_ADMIN_PASSWORD, BenchArgs, Plan, Report, Scratch, channels, loopback, measure};

/// One keep-alive HTTP/1.1 connection.
struct Connection(BufReader<TcpStream>);

impl Connection {
    async fn open(addr: std::net::SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self(BufReader::new(stream)))
    }

    /// Sends `request` and reads the answer; its status.
    async fn exchange(&mut self, request: &[u8]) -> std::io::Result<u16> {
        self.0.get_mut().write_all(request).await?;
        let mut line = String::new();
        self.0.read_line(&mut line).await?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("no HTTP status line"))?;
        let mut length = 0usize;
        loop {
            line.clear();
            if self.0.read_line(&mut line).await? == 0 {
                return Err(std::io::Error::other("connection closed"));
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        self.0.read_exact(&mut body).await?;
        Ok(status)
    }
}

/// The gateway's report, then the direct gRPC one.
pub(super) async fn bench_gateway(args: &BenchArgs) -> anyhow::Result<Vec<Report>> {
    use retail_proto::orders::orders_service_client::OrdersServiceClient;
    use retail_proto::orders::{self as opb};

    let scratch = Scratch::create(
        args.database_url.as_deref(),
        &["identity", "membership", "catalog", "orders", "partner", "analytics"],
    )
    .await?;
    let mut settings = crate::settings::SuiteSettings::default();
    settings.identity.server = loopback();
    settings.membership.server = loopback();
    settings.catalog.server = loopback();
    settings.orders.server = loopback();
    settings.partner.server = loopback();
    settings.analytics.server = loopback();
    settings.gateway.server = loopback();
    // The limit is not what is measured.
    settings.gateway.rate_limit.redis_url = args.redis_url.clone();
    settings.gateway.rate_limit.namespace = format!("bench-{}", rand::random::<u32>());
    settings.gateway.rate_limit.read = retail_gateway::settings::RateClass {
        rps: 1_000_000,
        burst: 1_000_000,
    };
    settings.identity.bootstrap.admin_password = SecretString::from(BENCH_ADMIN_PASSWORD);
    for (db, url) in [
        &mut settings.identity.database,
        &mut settings.membership.database,
        &mut settings.catalog.database,
        &mut settings.orders.database,
        &mut settings.partner.database,
        &mut settings.analytics.database,
    ]
    .into_iter()
    .zip(&scratch.urls)
    {
        db.url = SecretString::from(url.clone());
        db.max_connections = args.db_connections;
    }
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = futures::FutureExt::shared(futures::FutureExt::boxed(async move {
        let _ = rx.await;
    }));
    let launched = crate::up::launch(&mut settings, shutdown).await?;
    let identity = channels(launched.identity, 1).await?.remove(0);
    let bearer = crate::seed::admin_bearer(identity.clone(), BENCH_ADMIN_PASSWORD).await?;
    let skus = crate::seed::seed_catalog(
        channels(launched.catalog, 1).await?.remove(0),
        &bearer,
        10,
        10,
        1_000,
        1,
    )
    .await?;
    let partners = crate::seed_partner::seed_partners(
        channels(launched.partner, 1).await?.remove(0),
        &bearer,
        &format!("bench{}", rand::random::<u16>()),
        1,
        0,
        1_000_000,
        1,
    )
    .await?;
    let partner = partners.first().context("no partner seeded")?;
    // Partner orders are priced from the level's wholesale list.
    let first_sku = skus.first().context("no SKU seeded")?;
    let catalog = channels(launched.catalog, 1).await?.remove(0);
    for level in crate::seed_partner::level_codes(channels(launched.partner, 1).await?.remove(0), &bearer).await? {
        crate::seed::set_partner_prices(
            catalog.clone(),
            &bearer,
            &level,
            std::slice::from_ref(first_sku),
            "EUR",
            1_999,
        )
        .await?;
    }
    let key = crate::seed::partner_api_key(identity.clone(), &bearer, &partner.id).await?;
    // The partner's own token, as the gateway gets it for the key.
    let token = retail_proto::identity::identity_service_client::IdentityServiceClient::new(identity)
        .exchange_api_key(retail_proto::identity::ExchangeApiKeyRequest { api_key: key.clone() })
        .await?
        .into_inner()
        .tokens
        .context("no token for the API key")?
        .access_token;
    let authorization: tonic::metadata::MetadataValue<tonic::metadata::Ascii> = format!("Bearer {token}").parse()?;
    let mut place = tonic::Request::new(opb::PlaceOrderRequest {
        order: Some(opb::Order {
            channel: opb::OrderChannel::Partner as i32,
            partner_id: partner.id.clone(),
            lines: vec![opb::OrderLine {
                sku: first_sku.clone(),
                quantity: 1,
                ..Default::default()
            }],
            ..Default::default()
        }),
        request_id: "bench-gateway-order".into(),
    });
    place.metadata_mut().insert("authorization", bearer.parse()?);
    let order = OrdersServiceClient::new(channels(launched.orders, 1).await?.remove(0))
        .place_order(place)
        .await?
        .into_inner();
    let order_id = order.name.strip_prefix("orders/").context("an order name")?.to_owned();

    let gateway = launched.gateway;
    let request: Arc<[u8]> = format!(
        "GET /v1/orders/{order_id} HTTP/1.1\r\nHost: {gateway}\r\nX-Api-Key: {key}\r\nAccept: application/json\r\n\r\n"
    )
    .into_bytes()
    .into();
    let connections: Arc<Vec<tokio::sync::Mutex<Option<Connection>>>> =
        Arc::new((0..args.concurrency).map(|_| tokio::sync::Mutex::new(None)).collect());
    let through_gateway = move |worker: usize| {
        let (connections, request) = (connections.clone(), request.clone());
        async move {
            let slot = connections
                .get(worker % connections.len().max(1))
                .ok_or_else(|| tonic::Status::internal("no connection slot"))?;
            let mut slot = slot.lock().await;
            if slot.is_none() {
                *slot = Some(
                    Connection::open(gateway)
                        .await
                        .map_err(|e| tonic::Status::unavailable(e.to_string()))?,
                );
            }
            let Some(connection) = slot.as_mut() else {
                return Err(tonic::Status::internal("no connection"));
            };
            match connection.exchange(&request).await {
                Ok(200) => Ok(()),
                Ok(status) => Err(tonic::Status::unknown(format!("HTTP {status}"))),
                Err(err) => {
                    *slot = None;
                    Err(tonic::Status::unavailable(err.to_string()))
                }
            }
        }
    };
    let direct_clients: Arc<Vec<OrdersServiceClient<tonic::transport::Channel>>> = Arc::new(
        channels(launched.orders, args.connections)
            .await?
            .into_iter()
            .map(OrdersServiceClient::new)
            .collect(),
    );
    let order_name = order.name.clone();
    let direct = move |worker: usize| {
        let (clients, name, authorization) = (direct_clients.clone(), order_name.clone(), authorization.clone());
        async move {
            let mut client = clients
                .get(worker % clients.len().max(1))
                .ok_or_else(|| tonic::Status::internal("no client"))?
                .clone();
            let mut request = tonic::Request::new(opb::GetOrderRequest { name });
            request.metadata_mut().insert("authorization", authorization);
            client.get_order(request).await.map(|_| ())
        }
    };
    const GATEWAY: &str = "gateway GET /v1/orders/{id}";
    const DIRECT: &str = "orders.GetOrder (direct gRPC)";
    if !args.warmup.is_zero() {
        measure(
            GATEWAY,
            args.concurrency,
            Plan::Duration(args.warmup),
            through_gateway.clone(),
        )
        .await?;
        measure(DIRECT, args.concurrency, Plan::Duration(args.warmup), direct.clone()).await?;
    }
    let reports = match args.requests {
        Some(n) => vec![
            measure(GATEWAY, args.concurrency, Plan::Requests(n), through_gateway).await?,
            measure(DIRECT, args.concurrency, Plan::Requests(n), direct).await?,
        ],
        None => {
            // Alternating slices, so both meet the same machine.
            let rounds = args.rounds.max(1);
            let slice = args.duration / rounds;
            let mut totals: Option<(Report, Report)> = None;
            for _ in 0..rounds {
                let gw = measure(
                    GATEWAY,
                    args.concurrency,
                    Plan::Duration(slice),
                    through_gateway.clone(),
                )
                .await?;
                let dr = measure(DIRECT, args.concurrency, Plan::Duration(slice), direct.clone()).await?;
                match totals.as_mut() {
                    Some((g, d)) => {
                        g.merge(&gw)?;
                        d.merge(&dr)?;
                    }
                    None => totals = Some((gw, dr)),
                }
                if let Some(baseline) = &args.baseline {
                    baseline.measure(args.concurrency, slice).await?;
                }
            }
            let (g, d) = totals.context("no round was measured")?;
            vec![g, d]
        }
    };
    let _ = stop.send(());
    launched.wait().await?;
    scratch.drop().await?;
    Ok(reports)
}

/// The gateway against the direct call: throughput share and added latency.
pub(super) fn print_comparison(gateway: &Report, direct: &Report) {
    println!(
        "gateway vs direct gRPC GetOrder at concurrency {}: {:.0} vs {:.0} req/s ({:.1}% of direct); \
         p50 {:.2} vs {:.2} ms; p99 {:.2} vs {:.2} ms (p99 added {:.2} ms)",
        gateway.concurrency,
        gateway.throughput(),
        direct.throughput(),
        100.0 * gateway.throughput() / direct.throughput().max(f64::EPSILON),
        gateway.ms(0.50),
        direct.ms(0.50),
        gateway.ms(0.99),
        direct.ms(0.99),
        gateway.ms(0.99) - direct.ms(0.99),
    );
}
