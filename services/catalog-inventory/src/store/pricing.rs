//! List prices, tier discounts, promotions, partner price lists and competitor
//! observations.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use retail_kit::error::ServiceResult;
use retail_kit::paging::Page;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::{competitor_price, list_price, partner_price, promotion, promotion_sku, tier_discount};
use crate::domain::pricing::{PriceRules, Promotion};

pub async fn upsert_list_price(conn: &impl ConnectionTrait, row: list_price::Model) -> ServiceResult<()> {
    list_price::Entity::insert(list_price::ActiveModel::from(row))
        .on_conflict(
            OnConflict::columns([list_price::Column::SkuCode, list_price::Column::Currency])
                .update_columns([list_price::Column::AmountMinor, list_price::Column::UpdatedAt])
                .to_owned(),
        )
        .exec(conn)
        .await?;
    Ok(())
}

/// List prices of `sku_codes` in `currency`, by SKU code.
pub async fn list_prices(
    conn: &impl ConnectionTrait,
    sku_codes: &[String],
    currency: &str,
) -> ServiceResult<HashMap<String, i64>> {
    Ok(list_price::Entity::find()
        .filter(list_price::Column::SkuCode.is_in(sku_codes.iter().cloned()))
        .filter(list_price::Column::Currency.eq(currency))
        .all(conn)
        .await?
        .into_iter()
        .map(|p| (p.sku_code, p.amount_minor))
        .collect())
}

pub async fn upsert_tier_discount(conn: &impl ConnectionTrait, row: tier_discount::Model) -> ServiceResult<()> {
    tier_discount::Entity::insert(tier_discount::ActiveModel::from(row))
        .on_conflict(
            OnConflict::column(tier_discount::Column::Tier)
                .update_columns([tier_discount::Column::DiscountBp, tier_discount::Column::UpdatedAt])
                .to_owned(),
        )
        .exec(conn)
        .await?;
    Ok(())
}

pub async fn delete_tier_discount(conn: &impl ConnectionTrait, tier: &str) -> ServiceResult<()> {
    tier_discount::Entity::delete_by_id(tier.to_owned()).exec(conn).await?;
    Ok(())
}

pub async fn tier_discounts(conn: &impl ConnectionTrait) -> ServiceResult<Vec<tier_discount::Model>> {
    Ok(tier_discount::Entity::find()
        .order_by_asc(tier_discount::Column::Tier)
        .all(conn)
        .await?)
}

pub async fn insert_promotion(
    conn: &impl ConnectionTrait,
    model: promotion::Model,
    sku_codes: &[String],
) -> ServiceResult<()> {
    let id = model.id.clone();
    promotion::ActiveModel::from(model).insert(conn).await?;
    for code in sku_codes {
        promotion_sku::ActiveModel {
            promotion_id: Set(id.clone()),
            sku_code: Set(code.clone()),
        }
        .insert(conn)
        .await?;
    }
    Ok(())
}

pub async fn find_promotion(conn: &impl ConnectionTrait, id: &str) -> ServiceResult<Option<promotion::Model>> {
    Ok(promotion::Entity::find_by_id(id.to_owned()).one(conn).await?)
}

/// The SKU codes of a promotion (empty for one on every SKU).
pub async fn promotion_skus(conn: &impl ConnectionTrait, id: &str) -> ServiceResult<Vec<String>> {
    Ok(promotion_sku::Entity::find()
        .filter(promotion_sku::Column::PromotionId.eq(id))
        .order_by_asc(promotion_sku::Column::SkuCode)
        .all(conn)
        .await?
        .into_iter()
        .map(|p| p.sku_code)
        .collect())
}

/// Ends a promotion at `at` if it would run longer.
pub async fn end_promotion(conn: &impl ConnectionTrait, id: &str, at: DateTime<Utc>) -> ServiceResult<()> {
    promotion::Entity::update_many()
        .col_expr(promotion::Column::EndsAt, Expr::value(at))
        .filter(promotion::Column::Id.eq(id))
        .filter(promotion::Column::EndsAt.gt(at))
        .exec(conn)
        .await?;
    Ok(())
}

/// Promotions newest first, optionally only those active at a time.
pub async fn list_promotions(
    conn: &impl ConnectionTrait,
    page: &Page,
    active_at: Option<DateTime<Utc>>,
) -> ServiceResult<Vec<promotion::Model>> {
    let mut query = promotion::Entity::find()
        .order_by_desc(promotion::Column::Id)
        .limit(page.fetch_limit());
    if let Some(after) = &page.after {
        query = query.filter(promotion::Column::Id.lt(after.as_str()));
    }
    if let Some(at) = active_at {
        query = query
            .filter(promotion::Column::StartsAt.lte(at))
            .filter(promotion::Column::EndsAt.gt(at));
    }
    Ok(query.all(conn).await?)
}

/// Every tier discount and every promotion not ended at `at`, with its SKUs: the
/// rules of consumer quotes at `at` or later (cached by the app's price cache).
pub async fn price_rules(conn: &impl ConnectionTrait, at: DateTime<Utc>) -> ServiceResult<PriceRules> {
    let tier_discounts = tier_discounts(conn)
        .await?
        .into_iter()
        .map(|t| (t.tier, t.discount_bp.max(0) as u32))
        .collect();
    let promos = promotion::Entity::find()
        .filter(promotion::Column::EndsAt.gt(at))
        .order_by_asc(promotion::Column::Id)
        .all(conn)
        .await?;
    let specific: Vec<String> = promos.iter().filter(|p| !p.all_skus).map(|p| p.id.clone()).collect();
    let mut skus: HashMap<String, HashSet<String>> = HashMap::new();
    if !specific.is_empty() {
        let backend = conn.get_database_backend();
        for row in promotion_sku::Entity::find()
            .filter(retail_kit::db::one_of(
                backend,
                (promotion_sku::Entity, promotion_sku::Column::PromotionId),
                &specific,
            ))
            .all(conn)
            .await?
        {
            skus.entry(row.promotion_id).or_default().insert(row.sku_code);
        }
    }
    let promotions = promos
        .into_iter()
        .map(|p| {
            let codes = (!p.all_skus).then(|| skus.remove(&p.id).unwrap_or_default());
            let promotion = Promotion {
                id: p.id,
                display_name: p.display_name,
                discount_bp: p.discount_bp.max(0) as u32,
                starts_at: p.starts_at,
                ends_at: p.ends_at,
            };
            (promotion, codes)
        })
        .collect();
    Ok(PriceRules {
        loaded_at: at,
        tier_discounts,
        promotions,
    })
}

pub async fn upsert_partner_price(conn: &impl ConnectionTrait, row: partner_price::Model) -> ServiceResult<()> {
    partner_price::Entity::insert(partner_price::ActiveModel::from(row))
        .on_conflict(
            OnConflict::columns([
                partner_price::Column::Level,
                partner_price::Column::SkuCode,
                partner_price::Column::Currency,
            ])
            .update_columns([partner_price::Column::AmountMinor, partner_price::Column::UpdatedAt])
            .to_owned(),
        )
        .exec(conn)
        .await?;
    Ok(())
}

/// Wholesale prices of `sku_codes` on `level`'s list in `currency`, by SKU code.
pub async fn partner_prices(
    conn: &impl ConnectionTrait,
    level: &str,
    sku_codes: &[String],
    currency: &str,
) -> ServiceResult<HashMap<String, i64>> {
    Ok(partner_price::Entity::find()
        .filter(partner_price::Column::Level.eq(level))
        .filter(partner_price::Column::SkuCode.is_in(sku_codes.iter().cloned()))
        .filter(partner_price::Column::Currency.eq(currency))
        .all(conn)
        .await?
        .into_iter()
        .map(|p| (p.sku_code, p.amount_minor))
        .collect())
}

/// Keeps the observation if it is the newest for its SKU and source.
pub async fn record_competitor_price(conn: &impl ConnectionTrait, row: competitor_price::Model) -> ServiceResult<()> {
    let existing = competitor_price::Entity::find_by_id((row.sku_code.clone(), row.source.clone()))
        .one(conn)
        .await?;
    match existing {
        Some(old) if old.observed_at > row.observed_at => Ok(()),
        Some(_) => {
            competitor_price::ActiveModel::from(row)
                .reset_all()
                .update(conn)
                .await?;
            Ok(())
        }
        None => {
            competitor_price::ActiveModel::from(row).insert(conn).await?;
            Ok(())
        }
    }
}

/// Latest observations that raise an alert, by SKU and source. Page keys are
/// `sku\u{1f}source`.
pub async fn competitor_alerts(
    conn: &impl ConnectionTrait,
    page: &Page,
) -> ServiceResult<Vec<competitor_price::Model>> {
    let mut query = competitor_price::Entity::find()
        .filter(competitor_price::Column::Alert.eq(true))
        .order_by_asc(competitor_price::Column::SkuCode)
        .order_by_asc(competitor_price::Column::Source)
        .limit(page.fetch_limit());
    if let Some(after) = &page.after
        && let Some((sku, source)) = after.split_once('\u{1f}')
    {
        query = query.filter(
            Condition::any().add(competitor_price::Column::SkuCode.gt(sku)).add(
                Condition::all()
                    .add(competitor_price::Column::SkuCode.eq(sku))
                    .add(competitor_price::Column::Source.gt(source)),
            ),
        );
    }
    Ok(query.all(conn).await?)
}
