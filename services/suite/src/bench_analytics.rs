//! The analytics benchmarks: touchpoint ingestion (events/s through
//! `IngestTouchpoints`, against PostgreSQL's own `COPY` of the same rows into a
//! table of the same shape, measured in the same run) and KPI queries over a
//! loaded history (latency percentiles).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use retail_proto::analytics::analytics_admin_service_client::AnalyticsAdminServiceClient;
use retail_proto::analytics::analytics_service_client::AnalyticsServiceClient;
use retail_proto::analytics::touchpoint_service_client::TouchpointServiceClient;
use retail_proto::analytics::{self as apb};
use retail_proto::events as ev;
use secrecy::ExposeSecret;

use super::{BenchArgs, Report, Running, Scratch, Target, authed, channels, loopback, run};

/// Touchpoints per ingestion request.
pub const BATCH: usize = 500;

/// Concurrent ingestion requests per connection while loading touchpoints.
const SEED_STREAMS_PER_CONNECTION: usize = 2;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Touchpoint `i` of a run: door counts, try-ons and receipts over 5 stores and
/// 200 SKUs, within the last hour.
pub fn touchpoint(run: u32, i: u64, at: i64) -> apb::Touchpoint {
    let store = format!("S{}", i % 5);
    let kind = ["door_entered", "try_on", "shelf_touch", "door_passed", "pos_receipt"][(i % 5) as usize];
    let sku = format!("SKU-{}", i % 200);
    apb::Touchpoint {
        event_id: format!("b{run}-{i}"),
        kind: kind.into(),
        occur_time: Some(prost_types::Timestamp {
            seconds: at - (i % 3_600) as i64,
            nanos: 0,
        }),
        store,
        sku_code: sku.clone(),
        subject: format!("shopper-{}", i % 50_000),
        count: 1 + (i % 3) as i64,
        amount_minor: if kind == "pos_receipt" { 4_900 } else { 0 },
        sku_codes: if kind == "pos_receipt" { vec![sku] } else { vec![] },
        ..Default::default()
    }
}

/// The raw row `COPY` writes for a touchpoint, in `touchpoints`' column order.
fn copy_line(t: &apb::Touchpoint, month: i32, received: i64) -> String {
    let at = t.occur_time.as_ref().map(|o| o.seconds).unwrap_or(0);
    format!(
        "{}\t{month}\t{}\t{at}\t{}\t{}\t{}\t{}\t{}\t{}\t0\t0\t{}\t{}\t0\t{received}\n",
        t.event_id,
        t.kind,
        t.store,
        t.place,
        t.sku_code,
        t.subject,
        t.staff_id,
        t.count,
        t.amount_minor,
        t.sku_codes.join(","),
    )
}

struct Analytics {
    running: Running,
    identity: Running,
    scratch: Scratch,
}

async fn start(args: &BenchArgs) -> anyhow::Result<Analytics> {
    let scratch = Scratch::create(args.database_url.as_deref(), &["analytics"]).await?;
    let identity = Running::identity(scratch.dir.path()).await?;
    let mut settings = retail_analytics::Settings {
        server: loopback(),
        ..Default::default()
    };
    settings.auth.identity_url = format!("http://{}", identity.addr);
    settings.database.url = scratch.url(0);
    settings.database.max_connections = args.db_connections;
    let app = retail_analytics::Application::build(settings).await?;
    let addr = app.local_addr();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run(async move {
        let _ = rx.await;
    }));
    Ok(Analytics {
        running: Running { addr, stop, task },
        identity,
        scratch,
    })
}

impl Analytics {
    async fn stop(self) -> anyhow::Result<()> {
        self.running.stop().await?;
        self.identity.stop().await?;
        self.scratch.drop().await
    }
}

/// Ingestion through the RPC, then `COPY` of as many rows of the same shape.
async fn ingest(args: &BenchArgs, a: &Analytics) -> anyhow::Result<Report> {
    let bearer: tonic::metadata::MetadataValue<_> = a.identity.admin_bearer().await?.parse()?;
    let clients: Vec<_> = channels(a.running.addr, args.connections)
        .await?
        .into_iter()
        .map(TouchpointServiceClient::new)
        .collect();
    let run_id: u32 = rand::random();
    let cursor = Arc::new(AtomicU64::new(0));
    let at = now();
    let call = move |worker: usize| {
        let mut client = clients[worker % clients.len()].clone();
        let first = cursor.fetch_add(BATCH as u64, Ordering::Relaxed);
        let request = authed(
            &bearer,
            apb::IngestTouchpointsRequest {
                touchpoints: (first..first + BATCH as u64)
                    .map(|i| touchpoint(run_id, i, at))
                    .collect(),
            },
        );
        async move {
            let out = client.ingest_touchpoints(request).await?.into_inner();
            if out.accepted as usize != BATCH {
                return Err(tonic::Status::internal("a touchpoint was not accepted"));
            }
            Ok(())
        }
    };
    let label = format!("{} (x{BATCH})", Target::AnalyticsIngest.label());
    // As the order benchmarks do: the fresh tables get their first rows and
    // statistics (what autovacuum gives a deployment's within minutes) before
    // the measured run, so PostgreSQL does not keep plans made for empty tables.
    super::measure(
        &format!("{label} (first rows)"),
        args.concurrency,
        super::Plan::Duration(super::FIRST_ROWS_LOAD),
        call.clone(),
    )
    .await?;
    a.scratch.analyze().await?;
    let report = run(&label, args, call).await?;
    let events_per_sec = report.throughput() * BATCH as f64;
    println!("touchpoint ingestion: {events_per_sec:.0} events/s ({BATCH} per request)");
    let url = a.scratch.url(0);
    if !url.expose_secret().starts_with("postgres") {
        println!("COPY reference: needs --database-url postgres://... (the ingestion ran on SQLite)");
        return Ok(report);
    }
    use sea_orm::ConnectionTrait;
    use sea_orm::sqlx::postgres::PgPoolCopyExt;
    let db = sea_orm::Database::connect(url.expose_secret()).await?;
    db.execute_unprepared("CREATE TABLE copy_reference (LIKE touchpoints INCLUDING ALL)")
        .await?;
    let rows = (report.requests * BATCH as u64).max(BATCH as u64);
    let month = retail_analytics::projection::month_key(at);
    let mut data = String::new();
    for i in 0..rows {
        data.push_str(&copy_line(&touchpoint(run_id ^ 1, i, at), month, at));
    }
    let pool = db.get_postgres_connection_pool();
    let started = Instant::now();
    let mut copy = pool.copy_in_raw("COPY copy_reference FROM STDIN").await?;
    copy.send(data.as_bytes()).await?;
    let copied = copy.finish().await?;
    let secs = started.elapsed().as_secs_f64();
    let copy_rate = copied as f64 / secs.max(f64::EPSILON);
    println!(
        "COPY reference: {copied} rows in {secs:.2} s = {copy_rate:.0} rows/s; ingestion = {:.1}% of COPY",
        100.0 * events_per_sec / copy_rate.max(f64::EPSILON)
    );
    db.close().await?;
    Ok(report)
}

/// Loads `orders` paid orders of the last year (through ImportEvents) and
/// `touchpoints` touchpoints, then measures a rotation of KPI queries.
async fn kpis(args: &BenchArgs, a: &Analytics) -> anyhow::Result<Report> {
    let bearer_text = a.identity.admin_bearer().await?;
    let bearer: tonic::metadata::MetadataValue<_> = bearer_text.parse()?;
    let channel = channels(a.running.addr, 1).await?.remove(0);
    let mut admin = AnalyticsAdminServiceClient::new(channel.clone());
    let at = now();
    let started = Instant::now();
    let orders = args.seed_orders;
    let mut position = 0u64;
    let mut batch = Vec::with_capacity(1_000);
    let channels_of = ["store", "online", "partner"];
    for i in 0..orders {
        let t = at - 365 * 86_400 + (i as i64 * 365 * 86_400) / orders.max(1) as i64;
        let message = ev::OrderPaid {
            order_id: format!("o{i}"),
            parties: Some(ev::OrderParties {
                member_id: format!("m{}", i % 20_000),
                channel: channels_of[(i % 3) as usize].into(),
                store: if i % 3 == 0 {
                    format!("S{}", i % 5)
                } else {
                    String::new()
                },
                ..Default::default()
            }),
            lines: vec![ev::OrderedUnits {
                sku_code: format!("SKU-{}", i % 200),
                quantity: 1,
                unit_price: Some(retail_proto::common::Money {
                    currency_code: "EUR".into(),
                    amount_minor: 4_900,
                }),
            }],
            amount: Some(retail_proto::common::Money {
                currency_code: "EUR".into(),
                amount_minor: 4_900,
            }),
            pay_time: Some(prost_types::Timestamp { seconds: t, nanos: 0 }),
        };
        position += 1;
        batch.push(ev::EventEnvelope {
            id: format!("bench-{position}"),
            r#type: <ev::OrderPaid as prost::Name>::full_name(),
            source: "import".into(),
            aggregate_id: format!("o{i}"),
            occur_time: Some(prost_types::Timestamp { seconds: t, nanos: 0 }),
            position,
            payload: Some(prost_types::Any {
                type_url: <ev::OrderPaid as prost::Name>::type_url(),
                value: prost::Message::encode_to_vec(&message),
            }),
            partition_key: String::new(),
        });
        if batch.len() == 1_000 || i + 1 == orders {
            admin
                .import_events(authed(
                    &bearer,
                    apb::ImportEventsRequest {
                        events: std::mem::take(&mut batch),
                    },
                ))
                .await?;
        }
    }
    // Touchpoints go in over several streams at once, as the ingestion bench
    // sends them: 10M of them over one stream would take half an hour.
    let run_id: u32 = rand::random();
    let total = args.seed_touchpoints;
    let next = Arc::new(AtomicU64::new(0));
    let mut senders = tokio::task::JoinSet::new();
    for channel in channels(a.running.addr, args.connections).await? {
        for _ in 0..SEED_STREAMS_PER_CONNECTION {
            let mut touch = TouchpointServiceClient::new(channel.clone());
            let (bearer, next) = (bearer.clone(), next.clone());
            senders.spawn(async move {
                loop {
                    let i = next.fetch_add(BATCH as u64, Ordering::Relaxed);
                    if i >= total {
                        return Ok::<_, tonic::Status>(());
                    }
                    let n = (total - i).min(BATCH as u64);
                    touch
                        .ingest_touchpoints(authed(
                            &bearer,
                            apb::IngestTouchpointsRequest {
                                touchpoints: (i..i + n).map(|k| touchpoint(run_id, k, at)).collect(),
                            },
                        ))
                        .await?;
                }
            });
        }
    }
    while let Some(sent) = senders.join_next().await {
        sent??;
    }
    let loaded = started.elapsed().as_secs_f64();
    let settling = Instant::now();
    a.scratch.vacuum_analyze().await?;
    println!(
        "loaded {orders} orders and {} touchpoints in {loaded:.1} s; VACUUM (ANALYZE) {:.1} s",
        args.seed_touchpoints,
        settling.elapsed().as_secs_f64()
    );
    let clients: Vec<_> = channels(a.running.addr, args.connections)
        .await?
        .into_iter()
        .map(AnalyticsServiceClient::new)
        .collect();
    let cursor = Arc::new(AtomicU64::new(0));
    let month = |start: i64, end: i64| {
        Some(apb::Period {
            start_time: Some(prost_types::Timestamp {
                seconds: start,
                nanos: 0,
            }),
            end_time: Some(prost_types::Timestamp { seconds: end, nanos: 0 }),
        })
    };
    run(Target::AnalyticsKpi.label(), args, move |worker| {
        let mut client = clients[worker % clients.len()].clone();
        let i = cursor.fetch_add(1, Ordering::Relaxed);
        let bearer = bearer.clone();
        async move {
            match i % 3 {
                0 => client
                    .get_sales_report(authed(
                        &bearer,
                        apb::GetSalesReportRequest {
                            period: month(at - 30 * 86_400 - 1_800, at),
                            dimension: "channel".into(),
                            dimension_value: "online".into(),
                        },
                    ))
                    .await
                    .map(|_| ()),
                1 => client
                    .get_store_funnel(authed(
                        &bearer,
                        apb::GetStoreFunnelRequest {
                            period: month(at - 86_400, at + 3_600),
                            store: format!("S{}", i % 5),
                        },
                    ))
                    .await
                    .map(|_| ()),
                _ => client
                    .get_satisfaction(authed(
                        &bearer,
                        apb::GetSatisfactionRequest {
                            period: month(at - 90 * 86_400, at),
                            ..Default::default()
                        },
                    ))
                    .await
                    .map(|_| ()),
            }
        }
    })
    .await
}

pub async fn bench_analytics(args: &BenchArgs, target: Target) -> anyhow::Result<Report> {
    let a = start(args).await?;
    let report = match target {
        Target::AnalyticsIngest => ingest(args, &a).await,
        _ => kpis(args, &a).await,
    };
    a.stop().await?;
    report
}
