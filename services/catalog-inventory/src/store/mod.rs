//! Catalog-inventory's tables and queries. Database errors are translated here (a
//! taken SKU code is `AlreadyExists`); stock only changes through the conditional
//! updates in [`inventory`], and the schema's CHECK constraints back them up.

pub mod coupons;
pub mod entities;
pub mod inventory;
pub mod migration;
pub mod pricing;

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use retail_kit::db::is_unique_violation;
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::paging::Page;
use sea_orm::sea_query::{OnConflict, Query};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, FromQueryResult,
    QueryFilter, QueryOrder, QuerySelect,
};

pub use entities::{
    allocation, competitor_price, coupon, coupon_code, coupon_redemption, list_price, listing, listing_change,
    partner_price, product, product_tag, promotion, promotion_sku, reservation, sku, stock, stock_movement,
    tier_discount, warehouse,
};

use crate::domain::reconcile::SkuFacts;

pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A SKU as the API shows it: its row, sellable stock and listed channels.
#[derive(Debug, Clone)]
pub struct SkuView {
    pub sku: sku::Model,
    pub sellable: i64,
    pub listed_channels: Vec<String>,
}

/// A product with its tags and variants.
#[derive(Debug, Clone)]
pub struct ProductView {
    pub product: product::Model,
    pub tags: Vec<String>,
    pub skus: Vec<SkuView>,
}

pub async fn insert_product(
    conn: &impl ConnectionTrait,
    model: product::Model,
    tags: &[String],
    skus: Vec<sku::Model>,
) -> ServiceResult<()> {
    let product_id = model.id.clone();
    product::ActiveModel::from(model).insert(conn).await?;
    replace_tags(conn, &product_id, tags).await?;
    for s in skus {
        insert_sku(conn, s).await?;
    }
    Ok(())
}

pub async fn insert_sku(conn: &impl ConnectionTrait, model: sku::Model) -> ServiceResult<()> {
    let code = model.code.clone();
    sku::ActiveModel::from(model).insert(conn).await.map_err(|e| {
        if is_unique_violation(&e) {
            ServiceError::AlreadyExists(format!("sku {code} already exists"))
        } else {
            e.into()
        }
    })?;
    Ok(())
}

pub async fn replace_tags(conn: &impl ConnectionTrait, product_id: &str, tags: &[String]) -> ServiceResult<()> {
    product_tag::Entity::delete_many()
        .filter(product_tag::Column::ProductId.eq(product_id))
        .exec(conn)
        .await?;
    for (i, tag) in tags.iter().enumerate() {
        product_tag::ActiveModel {
            product_id: Set(product_id.to_owned()),
            tag: Set(tag.clone()),
            ordinal: Set(i as i32),
        }
        .insert(conn)
        .await?;
    }
    Ok(())
}

pub async fn find_product(conn: &impl ConnectionTrait, id: &str) -> ServiceResult<Option<product::Model>> {
    Ok(product::Entity::find_by_id(id.to_owned()).one(conn).await?)
}

pub async fn update_product(conn: &impl ConnectionTrait, active: product::ActiveModel) -> ServiceResult<()> {
    active.update(conn).await?;
    Ok(())
}

/// `CAST(SUM(col) AS BIGINT)`: PostgreSQL sums BIGINT into NUMERIC otherwise.
fn sum_as_bigint(col: impl sea_orm::ColumnTrait) -> sea_orm::sea_query::SimpleExpr {
    sea_orm::sea_query::Func::cast_as(col.sum(), sea_orm::sea_query::Alias::new("BIGINT")).into()
}

#[derive(Debug, FromQueryResult)]
struct SellableSum {
    sku_code: String,
    sellable: Option<i64>,
}

/// Sellable units per SKU across warehouses, and listed channels per SKU.
async fn sku_facts(
    conn: &impl ConnectionTrait,
    codes: &[String],
) -> ServiceResult<(HashMap<String, i64>, HashMap<String, Vec<String>>)> {
    if codes.is_empty() {
        return Ok((HashMap::new(), HashMap::new()));
    }
    let sums = stock::Entity::find()
        .select_only()
        .column(stock::Column::SkuCode)
        .column_as(sum_as_bigint(stock::Column::Sellable), "sellable")
        .filter(stock::Column::SkuCode.is_in(codes.iter().cloned()))
        .group_by(stock::Column::SkuCode)
        .into_model::<SellableSum>()
        .all(conn)
        .await?;
    let sellable = sums
        .into_iter()
        .map(|s| (s.sku_code, s.sellable.unwrap_or(0)))
        .collect();
    let mut listed: HashMap<String, Vec<String>> = HashMap::new();
    for l in listing::Entity::find()
        .filter(listing::Column::SkuCode.is_in(codes.iter().cloned()))
        .filter(listing::Column::Listed.eq(true))
        .order_by_asc(listing::Column::Channel)
        .all(conn)
        .await?
    {
        listed.entry(l.sku_code).or_default().push(l.channel);
    }
    Ok((sellable, listed))
}

/// SKUs by code, with stock and listings, in the order asked; missing ones are left out.
/// One round trip: each SKU row carries its summed stock and its listed channels.
pub async fn sku_views(conn: &impl ConnectionTrait, codes: &[String]) -> ServiceResult<Vec<SkuView>> {
    #[derive(Debug, FromQueryResult)]
    struct Row {
        code: String,
        product_id: String,
        attributes_json: String,
        created_at: chrono::DateTime<Utc>,
        sellable: i64,
        channels: Option<String>,
    }
    if codes.is_empty() {
        return Ok(Vec::new());
    }
    let backend = conn.get_database_backend();
    let concat = match backend {
        sea_orm::DatabaseBackend::Postgres => "string_agg",
        _ => "group_concat",
    };
    let rows = sku::Entity::find()
        .select_only()
        .column(sku::Column::Code)
        .column(sku::Column::ProductId)
        .column(sku::Column::AttributesJson)
        .column(sku::Column::CreatedAt)
        .column_as(
            sea_orm::sea_query::Expr::cust(
                "(SELECT CAST(COALESCE(SUM(stock.sellable), 0) AS BIGINT) FROM stock WHERE stock.sku_code = skus.code)",
            ),
            "sellable",
        )
        .column_as(
            sea_orm::sea_query::Expr::cust(format!(
                "(SELECT {concat}(listings.channel, ',') FROM listings \
                 WHERE listings.sku_code = skus.code AND listings.listed)"
            )),
            "channels",
        )
        .filter(retail_kit::db::one_of(backend, (sku::Entity, sku::Column::Code), codes))
        .into_model::<Row>()
        .all(conn)
        .await?;
    let mut by_code: HashMap<String, Row> = rows.into_iter().map(|r| (r.code.clone(), r)).collect();
    Ok(codes
        .iter()
        .filter_map(|c| by_code.remove(c))
        .map(|r| {
            // Channel names are identifiers (no commas); sorted so every backend agrees.
            let mut listed_channels: Vec<String> = r
                .channels
                .as_deref()
                .unwrap_or_default()
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect();
            listed_channels.sort();
            SkuView {
                listed_channels,
                sellable: r.sellable,
                sku: sku::Model {
                    code: r.code,
                    product_id: r.product_id,
                    attributes_json: r.attributes_json,
                    created_at: r.created_at,
                },
            }
        })
        .collect())
}

/// Full views of `products`, in their order.
pub async fn product_views(
    conn: &impl ConnectionTrait,
    products: Vec<product::Model>,
) -> ServiceResult<Vec<ProductView>> {
    let ids: Vec<String> = products.iter().map(|p| p.id.clone()).collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut tags: HashMap<String, Vec<String>> = HashMap::new();
    for t in product_tag::Entity::find()
        .filter(product_tag::Column::ProductId.is_in(ids.iter().cloned()))
        .order_by_asc(product_tag::Column::Ordinal)
        .all(conn)
        .await?
    {
        tags.entry(t.product_id).or_default().push(t.tag);
    }
    let skus = sku::Entity::find()
        .filter(sku::Column::ProductId.is_in(ids.iter().cloned()))
        .order_by_asc(sku::Column::CreatedAt)
        .order_by_asc(sku::Column::Code)
        .all(conn)
        .await?;
    let codes: Vec<String> = skus.iter().map(|s| s.code.clone()).collect();
    let (sellable, mut listed) = sku_facts(conn, &codes).await?;
    let mut skus_of: HashMap<String, Vec<SkuView>> = HashMap::new();
    for s in skus {
        skus_of.entry(s.product_id.clone()).or_default().push(SkuView {
            sellable: sellable.get(&s.code).copied().unwrap_or(0),
            listed_channels: listed.remove(&s.code).unwrap_or_default(),
            sku: s,
        });
    }
    Ok(products
        .into_iter()
        .map(|p| ProductView {
            tags: tags.remove(&p.id).unwrap_or_default(),
            skus: skus_of.remove(&p.id).unwrap_or_default(),
            product: p,
        })
        .collect())
}

/// Products by id, in the order asked; missing ones are left out.
pub async fn products_by_ids(conn: &impl ConnectionTrait, ids: &[String]) -> ServiceResult<Vec<ProductView>> {
    let rows = product::Entity::find()
        .filter(product::Column::Id.is_in(ids.iter().cloned()))
        .all(conn)
        .await?;
    let mut by_id: HashMap<String, product::Model> = rows.into_iter().map(|p| (p.id.clone(), p)).collect();
    let ordered: Vec<_> = ids.iter().filter_map(|id| by_id.remove(id)).collect();
    product_views(conn, ordered).await
}

/// Filters of the product list.
#[derive(Debug, Default, Clone)]
pub struct ProductFilter {
    pub category: Option<String>,
    pub tag: Option<String>,
    pub role: Option<String>,
    /// (channel, listed): products with a SKU in that state on the channel.
    pub listing: Option<(String, bool)>,
}

pub async fn list_products(
    conn: &impl ConnectionTrait,
    page: &Page,
    filter: &ProductFilter,
) -> ServiceResult<Vec<product::Model>> {
    let mut query = product::Entity::find()
        .order_by_asc(product::Column::Id)
        .limit(page.fetch_limit());
    if let Some(after) = &page.after {
        query = query.filter(product::Column::Id.gt(after.as_str()));
    }
    if let Some(category) = &filter.category {
        // At or below the category: equal, or starting with "category/" (compared as
        // a range, since '_' and '%' would be wildcards in LIKE).
        let below_start = format!("{category}/");
        let below_end = format!("{category}0"); // '0' follows '/' in ASCII
        query = query.filter(
            Condition::any()
                .add(product::Column::Category.eq(category.as_str()))
                .add(
                    Condition::all()
                        .add(product::Column::Category.gte(below_start))
                        .add(product::Column::Category.lt(below_end)),
                ),
        );
    }
    if let Some(tag) = &filter.tag {
        let tagged = Query::select()
            .column(product_tag::Column::ProductId)
            .from(product_tag::Entity)
            .and_where(product_tag::Column::Tag.eq(tag.as_str()))
            .to_owned();
        query = query.filter(product::Column::Id.in_subquery(tagged));
    }
    if let Some(role) = &filter.role {
        query = query.filter(product::Column::Role.eq(role.as_str()));
    }
    if let Some((channel, listed)) = &filter.listing {
        let listed_skus = Query::select()
            .column(listing::Column::SkuCode)
            .from(listing::Entity)
            .and_where(listing::Column::Channel.eq(channel.as_str()))
            .and_where(listing::Column::Listed.eq(true))
            .to_owned();
        let mut in_state = Query::select();
        in_state.column(sku::Column::ProductId).from(sku::Entity);
        if *listed {
            in_state.and_where(sku::Column::Code.in_subquery(listed_skus));
        } else {
            in_state.and_where(sku::Column::Code.not_in_subquery(listed_skus));
        }
        query = query.filter(product::Column::Id.in_subquery(in_state.to_owned()));
    }
    Ok(query.all(conn).await?)
}

pub async fn find_sku(conn: &impl ConnectionTrait, code: &str) -> ServiceResult<Option<sku::Model>> {
    Ok(sku::Entity::find_by_id(code.to_owned()).one(conn).await?)
}

/// Records a listing decision: the current state and a history row.
pub async fn set_listing(
    conn: &impl ConnectionTrait,
    sku_code: &str,
    channel: &str,
    listed: bool,
    actor: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> ServiceResult<listing::Model> {
    let row = listing::Model {
        sku_code: sku_code.to_owned(),
        channel: channel.to_owned(),
        listed,
        actor: actor.to_owned(),
        reason: reason.to_owned(),
        updated_at: now,
    };
    listing::Entity::insert(listing::ActiveModel::from(row.clone()))
        .on_conflict(
            OnConflict::columns([listing::Column::SkuCode, listing::Column::Channel])
                .update_columns([
                    listing::Column::Listed,
                    listing::Column::Actor,
                    listing::Column::Reason,
                    listing::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec(conn)
        .await?;
    listing_change::ActiveModel {
        id: Set(new_id()),
        sku_code: Set(sku_code.to_owned()),
        channel: Set(channel.to_owned()),
        listed: Set(listed),
        actor: Set(actor.to_owned()),
        reason: Set(reason.to_owned()),
        created_at: Set(now),
    }
    .insert(conn)
    .await?;
    Ok(row)
}

pub async fn find_listing(
    conn: &impl ConnectionTrait,
    sku_code: &str,
    channel: &str,
) -> ServiceResult<Option<listing::Model>> {
    Ok(listing::Entity::find_by_id((sku_code.to_owned(), channel.to_owned()))
        .one(conn)
        .await?)
}

/// Listing decisions of a SKU, newest first (ids are UUID v7).
pub async fn listing_changes(
    conn: &impl ConnectionTrait,
    sku_code: &str,
    page: &Page,
) -> ServiceResult<Vec<listing_change::Model>> {
    let mut query = listing_change::Entity::find()
        .filter(listing_change::Column::SkuCode.eq(sku_code))
        .order_by_desc(listing_change::Column::Id)
        .limit(page.fetch_limit());
    if let Some(after) = &page.after {
        query = query.filter(listing_change::Column::Id.lt(after.as_str()));
    }
    Ok(query.all(conn).await?)
}

/// Every SKU with what the reconciliation of `channel` needs (a full scan: the
/// report runs daily or on demand, not on a hot path).
pub async fn reconciliation_facts(conn: &impl ConnectionTrait, channel: &str) -> ServiceResult<Vec<SkuFacts>> {
    #[derive(Debug, FromQueryResult)]
    struct Title {
        id: String,
        title: String,
    }
    let titles: HashMap<String, String> = product::Entity::find()
        .select_only()
        .column(product::Column::Id)
        .column(product::Column::Title)
        .into_model::<Title>()
        .all(conn)
        .await?
        .into_iter()
        .map(|t| (t.id, t.title))
        .collect();
    let sellable: HashMap<String, i64> = stock::Entity::find()
        .select_only()
        .column(stock::Column::SkuCode)
        .column_as(sum_as_bigint(stock::Column::Sellable), "sellable")
        .group_by(stock::Column::SkuCode)
        .into_model::<SellableSum>()
        .all(conn)
        .await?
        .into_iter()
        .map(|s| (s.sku_code, s.sellable.unwrap_or(0)))
        .collect();
    let listed: HashSet<String> = listing::Entity::find()
        .filter(listing::Column::Channel.eq(channel))
        .filter(listing::Column::Listed.eq(true))
        .all(conn)
        .await?
        .into_iter()
        .map(|l| l.sku_code)
        .collect();
    let skus = sku::Entity::find().order_by_asc(sku::Column::Code).all(conn).await?;
    Ok(skus
        .into_iter()
        .map(|s| SkuFacts {
            attributes: serde_json::from_str::<BTreeMap<String, String>>(&s.attributes_json).unwrap_or_default(),
            listed: listed.contains(&s.code),
            sellable: sellable.get(&s.code).copied().unwrap_or(0),
            title: titles.get(&s.product_id).cloned().unwrap_or_default(),
            sku: s.code,
        })
        .collect())
}
