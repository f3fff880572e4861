//! `retail-suite seed`: a realistic demo dataset, loaded through the public APIs with
//! a progress bar.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use rand::Rng;
use retail_proto::catalog::catalog_service_client::CatalogServiceClient;
use retail_proto::catalog::inventory_service_client::InventoryServiceClient;
use retail_proto::catalog::pricing_service_client::PricingServiceClient;
use retail_proto::catalog::{self as cpb};
use retail_proto::identity::identity_service_client::IdentityServiceClient;
use retail_proto::identity::{self as ipb};
use retail_proto::membership::membership_service_client::MembershipServiceClient;
use retail_proto::membership::{self as pb};
use tonic::transport::Channel;

#[derive(Debug, Clone, clap::Args)]
pub struct SeedArgs {
    /// Members to register.
    #[arg(long, default_value_t = 100_000)]
    pub members: u64,
    /// Registrations in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub identity: String,
    #[arg(long, default_value = "http://127.0.0.1:50052")]
    pub membership: String,
    /// SKUs to create (in products of up to 100 variants), each with a list price
    /// and stock.
    #[arg(long, default_value_t = 2_000)]
    pub skus: u64,
    #[arg(long, default_value = "http://127.0.0.1:50053")]
    pub catalog: String,
    /// Partner organisations to register and admit, each with reps and this
    /// month's targets (plus the redemption catalog).
    #[arg(long, default_value_t = 200)]
    pub partners: u64,
    /// Sales reps per partner.
    #[arg(long, default_value_t = 3)]
    pub reps_per_partner: u64,
    #[arg(long, default_value = "http://127.0.0.1:50055")]
    pub partner: String,
    #[arg(long, default_value = "http://127.0.0.1:50056")]
    pub analytics: String,
    /// Orders of the two years of history imported into analytics (0: none).
    #[arg(long, default_value_t = 50_000)]
    pub history_orders: u64,
    /// Customers of that history.
    #[arg(long, default_value_t = 5_000)]
    pub history_members: u64,
    /// Writes an API key of the first seeded partner to this file (private to its
    /// owner): the partner's id on the first line, the key on the second, for
    /// trying the partner gateway.
    #[arg(long)]
    pub partner_api_key_file: Option<std::path::PathBuf>,
    /// Seconds to wait for membership's campaign job to run the demo campaign
    /// (0: no demo campaign).
    #[arg(long, default_value_t = 180)]
    pub campaign_wait_secs: u64,
    /// Directory holding `admin-password` (as `retail-suite up` created it).
    #[arg(long, default_value = "data")]
    pub data_dir: std::path::PathBuf,
}

const REGIONS: &[&str] = &["DE-BE", "DE-HH", "DE-BY", "FR-IDF", "NL-NH", "AT-9", "CH-ZH"];
const INTERESTS: &[&str] = &[
    "outdoor/hiking",
    "outdoor/running",
    "fashion/shoes",
    "home/kitchen",
    "kids",
];

/// Creates an API key of `partner` holding every partner scope; returns the key.
pub async fn partner_api_key(identity: Channel, bearer: &str, partner: &str) -> anyhow::Result<String> {
    let header: tonic::metadata::MetadataValue<_> = bearer.parse()?;
    let created = IdentityServiceClient::new(identity)
        .create_api_key(with_bearer(
            &header,
            ipb::CreateApiKeyRequest {
                api_key: Some(ipb::ApiKey {
                    display_name: format!("{partner} system (seed)"),
                    partner_id: partner.to_owned(),
                    scopes: [
                        "catalog.read",
                        "orders.read",
                        "orders.write",
                        "partner.read",
                        "partner.write",
                    ]
                    .map(String::from)
                    .to_vec(),
                    ..Default::default()
                }),
                request_id: uuid::Uuid::new_v4().to_string(),
            },
        ))
        .await
        .context("creating an API key failed")?;
    Ok(created.into_inner().secret)
}

/// Creates a store manager of `stores` with a random password; returns the user
/// name and the password.
pub async fn store_manager(
    identity: Channel,
    bearer: &str,
    username: &str,
    stores: &[&str],
) -> anyhow::Result<(String, String)> {
    let header: tonic::metadata::MetadataValue<_> = bearer.parse()?;
    let password = format!("Sm-{}", uuid::Uuid::new_v4().simple());
    IdentityServiceClient::new(identity)
        .create_user(with_bearer(
            &header,
            ipb::CreateUserRequest {
                user: Some(ipb::User {
                    username: username.to_owned(),
                    display_name: format!("Store manager of {}", stores.join(", ")),
                    kind: ipb::PrincipalKind::Staff as i32,
                    roles: vec![ipb::Role::StoreManager as i32],
                    stores: stores.iter().map(|s| (*s).to_owned()).collect(),
                    ..Default::default()
                }),
                password: password.clone(),
                request_id: uuid::Uuid::new_v4().to_string(),
            },
        ))
        .await
        .context("creating the store manager failed")?;
    Ok((username.to_owned(), password))
}

fn write_private(path: &std::path::Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("failed to write {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

/// A member's phone number in the seed's reserved range, unique per index.
pub fn seed_phone(run: u32, i: u64) -> String {
    format!("+4917{run:03}{i:07}")
}

/// Logs in as the admin and returns a bearer header value.
pub async fn admin_bearer(identity: Channel, password: &str) -> anyhow::Result<String> {
    let tokens = IdentityServiceClient::new(identity)
        .login(ipb::LoginRequest {
            username: "admin".into(),
            password: password.into(),
        })
        .await
        .context("admin login failed")?
        .into_inner()
        .tokens
        .context("login returned no token")?;
    Ok(format!("Bearer {}", tokens.access_token))
}

/// Creates a service account holding only `scopes` (as a POS terminal or shop
/// backend would have) and returns a bearer header value of its token.
pub async fn service_bearer(
    identity: Channel,
    admin_bearer: &str,
    client_id: &str,
    scopes: &[&str],
) -> anyhow::Result<String> {
    let mut client = IdentityServiceClient::new(identity);
    let mut create = tonic::Request::new(ipb::CreateServiceAccountRequest {
        service_account: Some(ipb::ServiceAccount {
            client_id: client_id.into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
        request_id: format!("{client_id}-{:016x}", rand::random::<u64>()),
    });
    create.metadata_mut().insert("authorization", admin_bearer.parse()?);
    let secret = client
        .create_service_account(create)
        .await
        .with_context(|| format!("creating service account {client_id} failed"))?
        .into_inner()
        .client_secret;
    let tokens = client
        .issue_service_token(ipb::IssueServiceTokenRequest {
            client_id: client_id.into(),
            client_secret: secret,
        })
        .await
        .with_context(|| format!("token for service account {client_id} failed"))?
        .into_inner()
        .tokens
        .context("no token issued")?;
    Ok(format!("Bearer {}", tokens.access_token))
}

/// Registers `count` members; returns the run number of their phones
/// ([`seed_phone`]) and their resource names.
pub async fn register_members(
    membership: Channel,
    bearer: &str,
    count: u64,
    concurrency: usize,
) -> anyhow::Result<(u32, Vec<String>)> {
    let run: u32 = rand::rng().random_range(0..1000);
    let bar = progress("members", count);
    let next = Arc::new(AtomicU64::new(0));
    let header: tonic::metadata::MetadataValue<_> = bearer.parse()?;
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (next, bar, header) = (next.clone(), bar.clone(), header.clone());
            let mut client = MembershipServiceClient::new(membership.clone());
            tokio::spawn(async move {
                let mut names = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return Ok::<_, anyhow::Error>(names);
                    }
                    let request = with_bearer(
                        &header,
                        pb::RegisterMemberRequest {
                            member: Some(pb::Member {
                                display_name: format!("Member {i}"),
                                region: REGIONS[i as usize % REGIONS.len()].into(),
                                identifiers: vec![
                                    pb::Identifier {
                                        kind: pb::IdentifierKind::Phone as i32,
                                        value: seed_phone(run, i),
                                        channel: String::new(),
                                    },
                                    pb::Identifier {
                                        kind: pb::IdentifierKind::Email as i32,
                                        value: format!("member{run}.{i}@example.com"),
                                        channel: String::new(),
                                    },
                                ],
                                tags: vec![pb::Tag {
                                    path: format!("interest/{}", INTERESTS[i as usize % INTERESTS.len()]),
                                    source: "seed".into(),
                                    ..Default::default()
                                }],
                                ..Default::default()
                            }),
                            request_id: format!("seed-{run}-{i}"),
                        },
                    );
                    let member = client.register_member(request).await.context("register failed")?;
                    names.push(member.into_inner().name);
                    bar.inc(1);
                }
            })
        })
        .collect();
    let mut names = Vec::with_capacity(count as usize);
    for w in workers {
        names.extend(w.await.context("a seeding worker panicked")??);
    }
    bar.finish_and_clear();
    Ok((run, names))
}

pub(crate) fn progress(what: &str, count: u64) -> ProgressBar {
    let bar = ProgressBar::new(count);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "seeding {what} [{{bar:40}}] {{pos}}/{{len}} {{per_sec}} eta {{eta}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

pub(crate) fn with_bearer<T>(
    header: &tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    message: T,
) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", header.clone());
    request
}

const CATEGORIES: &[(&str, &str)] = &[
    ("footwear/running", "running shoe"),
    ("footwear/hiking", "hiking boot"),
    ("apparel/jackets", "rain jacket"),
    ("apparel/shirts", "merino shirt"),
    ("equipment/packs", "day pack"),
];
const SIZES: &[&str] = &["XS", "S", "M", "L", "XL", "38", "40", "42", "44", "46"];
const COLORS: &[&str] = &[
    "black", "red", "blue", "green", "grey", "sand", "navy", "olive", "white", "teal",
];

/// How many of the seeded SKUs go on every partner level's wholesale list.
const WHOLESALE_SKUS: usize = 100;

/// The warehouses the seed stocks.
pub const SEED_WAREHOUSES: &[(&str, i32)] = &[("MAIN", 0), ("OVERFLOW", 10)];

/// Creates `count` SKUs in products of up to 100 variants; the first `stocked` of
/// them get a list price and `units` units in the main warehouse. Returns the SKU
/// resource names in creation order.
/// Puts `skus` (`skus/{code}`) on `level`'s wholesale price list at `unit_minor`
/// each (partner sales are priced from it).
pub async fn set_partner_prices(
    catalog: Channel,
    bearer: &str,
    level: &str,
    skus: &[String],
    currency: &str,
    unit_minor: i64,
) -> anyhow::Result<()> {
    let header: tonic::metadata::MetadataValue<_> = bearer.parse()?;
    let mut pricing = PricingServiceClient::new(catalog);
    for sku in skus {
        let mut request = tonic::Request::new(cpb::SetPartnerPriceRequest {
            partner_price: Some(cpb::PartnerPrice {
                partner_level: level.to_owned(),
                sku: sku.clone(),
                price: Some(retail_proto::common::Money {
                    currency_code: currency.to_owned(),
                    amount_minor: unit_minor,
                }),
            }),
        });
        request.metadata_mut().insert("authorization", header.clone());
        pricing
            .set_partner_price(request)
            .await
            .with_context(|| format!("setting the {level} price of {sku} failed"))?;
    }
    Ok(())
}

pub async fn seed_catalog(
    catalog: Channel,
    bearer: &str,
    count: u64,
    stocked: u64,
    units: i64,
    concurrency: usize,
) -> anyhow::Result<Vec<String>> {
    let run: u32 = rand::rng().random_range(0..1000);
    let header: tonic::metadata::MetadataValue<_> = bearer.parse()?;
    let mut inventory = InventoryServiceClient::new(catalog.clone());
    for (code, priority) in SEED_WAREHOUSES {
        let created = inventory
            .create_warehouse(with_bearer(
                &header,
                cpb::CreateWarehouseRequest {
                    warehouse: Some(cpb::Warehouse {
                        code: (*code).into(),
                        display_name: format!("{} warehouse", code.to_lowercase()),
                        priority: *priority,
                        ..Default::default()
                    }),
                },
            ))
            .await;
        match created {
            Ok(_) => {}
            Err(status) if status.code() == tonic::Code::AlreadyExists => {}
            Err(status) => return Err(status).context("creating a warehouse failed"),
        }
    }
    const PER_PRODUCT: u64 = 100;
    let products = count.div_ceil(PER_PRODUCT);
    let bar = progress("SKUs", count);
    let next = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (next, bar, header) = (next.clone(), bar.clone(), header.clone());
            let mut products_client = CatalogServiceClient::new(catalog.clone());
            let mut pricing = PricingServiceClient::new(catalog.clone());
            let mut inventory = InventoryServiceClient::new(catalog.clone());
            tokio::spawn(async move {
                let mut created = Vec::new();
                loop {
                    let p = next.fetch_add(1, Ordering::Relaxed);
                    if p >= products {
                        return Ok::<_, anyhow::Error>(created);
                    }
                    let (category, words) = CATEGORIES[p as usize % CATEGORIES.len()];
                    let variants = PER_PRODUCT.min(count - p * PER_PRODUCT);
                    let skus = (0..variants)
                        .map(|v| cpb::Sku {
                            sku_code: format!("S{run:03}-{p:05}-{v:02}"),
                            attributes: [
                                ("size".to_owned(), SIZES[v as usize % SIZES.len()].to_owned()),
                                ("color".to_owned(), COLORS[(v / 10) as usize % COLORS.len()].to_owned()),
                            ]
                            .into(),
                            ..Default::default()
                        })
                        .collect();
                    let product = products_client
                        .create_product(with_bearer(
                            &header,
                            cpb::CreateProductRequest {
                                product: Some(cpb::Product {
                                    category: category.into(),
                                    title_parts: Some(cpb::TitleParts {
                                        category_words: vec![words.into()],
                                        attribute_words: vec!["lightweight".into()],
                                        brand_words: vec!["Trailfox".into()],
                                        selling_point_words: vec![format!("model {run}-{p}")],
                                        promotion_words: vec![],
                                    }),
                                    tags: vec![format!("seed/{run}")],
                                    skus,
                                    ..Default::default()
                                }),
                                request_id: format!("seed-product-{run}-{p}"),
                            },
                        ))
                        .await
                        .context("creating a product failed")?
                        .into_inner();
                    for (v, sku) in product.skus.iter().enumerate() {
                        let index = p * PER_PRODUCT + v as u64;
                        if index < stocked {
                            pricing
                                .set_list_price(with_bearer(
                                    &header,
                                    cpb::SetListPriceRequest {
                                        sku: sku.name.clone(),
                                        price: Some(retail_proto::common::Money {
                                            currency_code: "EUR".into(),
                                            amount_minor: 2_999 + 1_000 * (index as i64 % 20),
                                        }),
                                    },
                                ))
                                .await
                                .context("setting a list price failed")?;
                            inventory
                                .receive_stock(with_bearer(
                                    &header,
                                    cpb::ReceiveStockRequest {
                                        sku: sku.name.clone(),
                                        warehouse: "warehouses/MAIN".into(),
                                        quantity: units,
                                        reference: "seed".into(),
                                        request_id: format!("seed-receive-{run}-{index}"),
                                    },
                                ))
                                .await
                                .context("receiving stock failed")?;
                        }
                        created.push((index, sku.name.clone()));
                    }
                    bar.inc(variants);
                }
            })
        })
        .collect();
    let mut names = Vec::with_capacity(count as usize);
    for w in workers {
        names.extend(w.await.context("a seeding worker panicked")??);
    }
    bar.finish_and_clear();
    names.sort();
    Ok(names.into_iter().map(|(_, n)| n).collect())
}

pub async fn seed(args: SeedArgs) -> anyhow::Result<()> {
    let password = std::fs::read_to_string(args.data_dir.join("admin-password"))
        .with_context(|| format!("failed to read {}/admin-password", args.data_dir.display()))?;
    let identity = Channel::from_shared(args.identity.clone())?.connect().await?;
    let membership = Channel::from_shared(args.membership.clone())?.connect().await?;
    let bearer = admin_bearer(identity, password.trim()).await?;
    let started = Instant::now();
    let (_, names) = register_members(membership.clone(), &bearer, args.members, args.concurrency).await?;
    println!(
        "seeded {} members in {:.1} s",
        names.len(),
        started.elapsed().as_secs_f64()
    );
    let catalog = Channel::from_shared(args.catalog.clone())?.connect().await?;
    let started = Instant::now();
    let skus = seed_catalog(catalog, &bearer, args.skus, args.skus, 500, args.concurrency).await?;
    println!(
        "seeded {} SKUs with prices and stock in {:.1} s",
        skus.len(),
        started.elapsed().as_secs_f64()
    );
    let partner = Channel::from_shared(args.partner.clone())?.connect().await?;
    let started = Instant::now();
    let prefix = format!("seed{:03}", rand::rng().random_range(0..1000));
    let partners = crate::seed_partner::seed_partners(
        partner.clone(),
        &bearer,
        &prefix,
        args.partners,
        args.reps_per_partner,
        2_500_000,
        args.concurrency,
    )
    .await?;
    let items = crate::seed_partner::seed_redemption_catalog(partner.clone(), &bearer).await?;
    println!(
        "seeded {} partners with {} reps each, this month's targets and {items} catalog items in {:.1} s",
        partners.len(),
        args.reps_per_partner,
        started.elapsed().as_secs_f64()
    );
    // Partner orders are priced from the partner level's wholesale list: the first
    // SKUs go on every level's, so the seeded partners can order them.
    if !partners.is_empty() && !skus.is_empty() {
        let started = Instant::now();
        let wholesale = &skus[..skus.len().min(WHOLESALE_SKUS)];
        let levels = crate::seed_partner::level_codes(partner, &bearer).await?;
        let catalog = Channel::from_shared(args.catalog.clone())?.connect().await?;
        for level in &levels {
            set_partner_prices(catalog.clone(), &bearer, level, wholesale, "EUR", 1_999).await?;
        }
        println!(
            "put {} SKUs on the wholesale lists of {} levels in {:.1} s",
            wholesale.len(),
            levels.len(),
            started.elapsed().as_secs_f64()
        );
    }
    if let (Some(path), Some(first)) = (&args.partner_api_key_file, partners.first()) {
        let identity = Channel::from_shared(args.identity.clone())?.connect().await?;
        let key = partner_api_key(identity, &bearer, &first.id).await?;
        write_private(path, &format!("{}\n{key}\n", first.id))?;
        println!("wrote an API key of partner {} to {}", first.id, path.display());
    }
    if args.history_orders > 0 {
        let started = Instant::now();
        crate::demo::seed_analytics(
            &args.analytics,
            &bearer,
            args.history_orders,
            args.history_members.max(1),
        )
        .await?;
        println!("seeded analytics in {:.1} s", started.elapsed().as_secs_f64());
    }
    // A campaign that has run, with responses in its report.
    if args.campaign_wait_secs > 0 && !names.is_empty() {
        let started = Instant::now();
        let campaign = crate::seed_campaign::seed_campaign(
            membership,
            &bearer,
            &names,
            &prefix,
            std::time::Duration::from_secs(args.campaign_wait_secs),
        )
        .await?;
        println!(
            "ran demo campaign {campaign} with purchases after its contacts in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    // A store manager who sees store BER only on the dashboard.
    let identity = Channel::from_shared(args.identity.clone())?.connect().await?;
    let (username, password) = store_manager(identity, &bearer, &format!("ber.manager.{prefix}"), &["BER"]).await?;
    let path = args.data_dir.join("store-manager");
    write_private(&path, &format!("{username}\n{password}\n"))?;
    println!(
        "created store manager {username} of store BER (user name and password in {})",
        path.display()
    );
    Ok(())
}
