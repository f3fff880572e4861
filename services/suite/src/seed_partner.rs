//! The partner programme's demo data: partner organisations (admitted), their sales
//! reps, this month's targets for each partner and rep, and the redemption catalog,
//! loaded through channel-partner's API with a progress bar.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use retail_proto::partner::incentive_service_client::IncentiveServiceClient;
use retail_proto::partner::partner_service_client::PartnerServiceClient;
use retail_proto::partner::target_service_client::TargetServiceClient;
use retail_proto::partner::{self as pb};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use crate::seed::{progress, with_bearer};

const TYPES: [pb::PartnerType; 3] = [
    pb::PartnerType::Dealer,
    pb::PartnerType::Agent,
    pb::PartnerType::Franchisee,
];
const REGIONS: &[&str] = &["DE-BE", "DE-HH", "DE-BY", "FR-IDF", "NL-NH", "AT-9", "CH-ZH"];

/// The redemption catalog: (category, name, points, stock; 0 = unlimited).
const CATALOG: &[(pb::CatalogCategory, &str, i64, i64)] = &[
    (pb::CatalogCategory::Rebate, "Cash rebate 500.00", 50_000, 0),
    (
        pb::CatalogCategory::Training,
        "Installer certification course",
        8_000,
        40,
    ),
    (
        pb::CatalogCategory::DemoUnit,
        "Demo unit of the new trail shoe",
        12_000,
        25,
    ),
    (pb::CatalogCategory::Service, "Service credits, 10 hours", 6_000, 0),
    (pb::CatalogCategory::Gift, "Branded rain jacket", 1_500, 200),
    (pb::CatalogCategory::Travel, "Weekend at the brand's summit", 30_000, 10),
];

/// A seeded partner: its id and this month's target.
#[derive(Debug, Clone)]
pub struct SeededPartner {
    pub id: String,
    pub target: String,
    pub reps: Vec<String>,
}

/// Registers and admits `count` partners with ids `{prefix}-{i}`, each with `reps`
/// sales reps, and sets this month's target for each partner (`target_minor`) and
/// rep (a third of it).
pub async fn seed_partners(
    channel: Channel,
    bearer: &str,
    prefix: &str,
    count: u64,
    reps: u64,
    target_minor: i64,
    concurrency: usize,
) -> anyhow::Result<Vec<SeededPartner>> {
    let header: MetadataValue<Ascii> = bearer.parse()?;
    let month = chrono::Utc::now().format("%Y-%m-01").to_string();
    let bar = progress("partners", count);
    let next = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (next, bar, header, month) = (next.clone(), bar.clone(), header.clone(), month.clone());
            let mut partners = PartnerServiceClient::new(channel.clone());
            let mut targets = TargetServiceClient::new(channel.clone());
            let prefix = prefix.to_owned();
            tokio::spawn(async move {
                let mut seeded = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return Ok::<_, anyhow::Error>(seeded);
                    }
                    let id = format!("{prefix}-{i}");
                    partners
                        .create_partner(with_bearer(
                            &header,
                            pb::CreatePartnerRequest {
                                partner: Some(pb::Partner {
                                    display_name: format!("Partner {i}"),
                                    r#type: TYPES[i as usize % TYPES.len()] as i32,
                                    region: REGIONS[i as usize % REGIONS.len()].into(),
                                    ..Default::default()
                                }),
                                partner_id: id.clone(),
                                request_id: format!("seed-{id}"),
                            },
                        ))
                        .await
                        .context("creating a partner failed")?;
                    partners
                        .activate_partner(with_bearer(
                            &header,
                            pb::ActivatePartnerRequest {
                                name: format!("partners/{id}"),
                                reason: "admitted (demo data)".into(),
                            },
                        ))
                        .await
                        .context("admitting a partner failed")?;
                    let mut subjects = vec![(format!("partners/{id}"), target_minor)];
                    let mut rep_names = Vec::new();
                    for r in 0..reps {
                        let rep = partners
                            .create_sales_rep(with_bearer(
                                &header,
                                pb::CreateSalesRepRequest {
                                    sales_rep: Some(pb::SalesRep {
                                        partner: format!("partners/{id}"),
                                        user_id: uuid::Uuid::new_v4().to_string(),
                                        display_name: format!("Rep {r} of partner {i}"),
                                        ..Default::default()
                                    }),
                                    request_id: format!("seed-{id}-rep-{r}"),
                                },
                            ))
                            .await
                            .context("creating a sales rep failed")?
                            .into_inner();
                        subjects.push((rep.name.clone(), (target_minor / 3).max(1)));
                        rep_names.push(rep.name);
                    }
                    let mut partner_target = String::new();
                    for (subject, amount_minor) in subjects {
                        let target = targets
                            .create_target(with_bearer(
                                &header,
                                pb::CreateTargetRequest {
                                    target: Some(pb::Target {
                                        subject,
                                        period_kind: pb::PeriodKind::Month as i32,
                                        period_start: month.clone(),
                                        amount_minor,
                                        ..Default::default()
                                    }),
                                    request_id: String::new(),
                                },
                            ))
                            .await
                            .context("setting a target failed")?
                            .into_inner();
                        if partner_target.is_empty() {
                            partner_target = target.name;
                        }
                    }
                    seeded.push(SeededPartner {
                        id,
                        target: partner_target,
                        reps: rep_names,
                    });
                    bar.inc(1);
                }
            })
        })
        .collect();
    let mut all = Vec::with_capacity(count as usize);
    for w in workers {
        all.extend(w.await.context("a seeding worker panicked")??);
    }
    bar.finish_and_clear();
    all.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(all)
}

/// The codes of the partner levels, lowest first.
pub async fn level_codes(channel: Channel, bearer: &str) -> anyhow::Result<Vec<String>> {
    let header: MetadataValue<Ascii> = bearer.parse()?;
    let levels = PartnerServiceClient::new(channel)
        .list_levels(with_bearer(&header, pb::ListLevelsRequest {}))
        .await
        .context("listing the partner levels failed")?
        .into_inner();
    Ok(levels.levels.into_iter().map(|l| l.code).collect())
}

/// The redemption catalog, one item per category.
pub async fn seed_redemption_catalog(channel: Channel, bearer: &str) -> anyhow::Result<usize> {
    let header: MetadataValue<Ascii> = bearer.parse()?;
    let mut client = IncentiveServiceClient::new(channel);
    let bar = progress("redemption catalog", CATALOG.len() as u64);
    for (category, name, points, stock) in CATALOG {
        client
            .create_catalog_item(with_bearer(
                &header,
                pb::CreateCatalogItemRequest {
                    catalog_item: Some(pb::CatalogItem {
                        category: *category as i32,
                        display_name: (*name).into(),
                        points_price: *points,
                        stock: *stock,
                        unlimited_stock: *stock == 0,
                        ..Default::default()
                    }),
                },
            ))
            .await
            .context("creating a catalog item failed")?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(CATALOG.len())
}
