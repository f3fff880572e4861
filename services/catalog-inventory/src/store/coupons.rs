//! Coupons, their codes and redemptions. A use is taken and given back only by the
//! conditional updates here ([`take_use`], [`give_back_use`]), never by a read and a
//! write; the CHECK on `coupon_codes` backs them up.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use retail_kit::db::is_unique_violation;
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::paging::Page;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::{coupon, coupon_code, coupon_redemption, product, sku};

/// Redemption states as stored.
pub mod redemption_state {
    pub const ACTIVE: &str = "active";
    pub const RELEASED: &str = "released";
}

/// A unique violation as ALREADY_EXISTS saying `what`; anything else as it is.
fn taken(err: sea_orm::DbErr, what: &str) -> ServiceError {
    if is_unique_violation(&err) {
        ServiceError::AlreadyExists(what.into())
    } else {
        err.into()
    }
}

pub async fn insert_coupon(
    conn: &impl ConnectionTrait,
    model: coupon::Model,
    code: Option<coupon_code::Model>,
) -> ServiceResult<()> {
    coupon::ActiveModel::from(model).insert(conn).await?;
    if let Some(code) = code {
        coupon_code::ActiveModel::from(code)
            .insert(conn)
            .await
            .map_err(|e| taken(e, "the coupon code is taken"))?;
    }
    Ok(())
}

pub async fn find_coupon(conn: &impl ConnectionTrait, id: &str) -> ServiceResult<Option<coupon::Model>> {
    Ok(coupon::Entity::find_by_id(id.to_owned()).one(conn).await?)
}

/// Coupons newest first.
pub async fn list_coupons(conn: &impl ConnectionTrait, page: &Page) -> ServiceResult<Vec<coupon::Model>> {
    let mut query = coupon::Entity::find()
        .order_by_desc(coupon::Column::Id)
        .limit(page.fetch_limit());
    if let Some(after) = &page.after {
        query = query.filter(coupon::Column::Id.lt(after.as_str()));
    }
    Ok(query.all(conn).await?)
}

/// Uses and codes of each coupon: `(used, issued)` by coupon id.
pub async fn usage(conn: &impl ConnectionTrait, ids: &[String]) -> ServiceResult<HashMap<String, (i64, i64)>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(String, i64, i64)> = coupon_code::Entity::find()
        .select_only()
        .column(coupon_code::Column::CouponId)
        .column_as(Expr::cust("CAST(SUM(used_count) AS BIGINT)"), "used")
        .column_as(Expr::cust("CAST(COUNT(*) AS BIGINT)"), "issued")
        .filter(coupon_code::Column::CouponId.is_in(ids.iter().cloned()))
        .group_by(coupon_code::Column::CouponId)
        .into_tuple()
        .all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(id, used, issued)| (id, (used, issued)))
        .collect())
}

/// Disables a coupon at `at` unless it is already; the rows changed.
pub async fn disable(conn: &impl ConnectionTrait, id: &str, at: DateTime<Utc>) -> ServiceResult<u64> {
    Ok(coupon::Entity::update_many()
        .col_expr(coupon::Column::DisabledAt, Expr::value(at))
        .filter(coupon::Column::Id.eq(id))
        .filter(coupon::Column::DisabledAt.is_null())
        .exec(conn)
        .await?
        .rows_affected)
}

pub async fn find_code(conn: &impl ConnectionTrait, code: &str) -> ServiceResult<Option<coupon_code::Model>> {
    Ok(coupon_code::Entity::find_by_id(code.to_owned()).one(conn).await?)
}

/// The codes of `coupon_id` issued to `members`.
pub async fn codes_of_members(
    conn: &impl ConnectionTrait,
    coupon_id: &str,
    members: &[String],
) -> ServiceResult<Vec<coupon_code::Model>> {
    Ok(coupon_code::Entity::find()
        .filter(coupon_code::Column::CouponId.eq(coupon_id))
        .filter(coupon_code::Column::MemberId.is_in(members.iter().cloned()))
        .all(conn)
        .await?)
}

/// Inserts codes; a member who has a code of the coupon already keeps it (the
/// insert of a second one does nothing).
pub async fn insert_codes(conn: &impl ConnectionTrait, codes: Vec<coupon_code::Model>) -> ServiceResult<()> {
    if codes.is_empty() {
        return Ok(());
    }
    coupon_code::Entity::insert_many(codes.into_iter().map(coupon_code::ActiveModel::from))
        .on_conflict(
            OnConflict::columns([coupon_code::Column::CouponId, coupon_code::Column::MemberId])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(conn)
        .await?;
    Ok(())
}

pub async fn find_redemption(
    conn: &impl ConnectionTrait,
    order_id: &str,
) -> ServiceResult<Option<coupon_redemption::Model>> {
    Ok(coupon_redemption::Entity::find_by_id(order_id.to_owned())
        .one(conn)
        .await?)
}

pub async fn insert_redemption(conn: &impl ConnectionTrait, model: coupon_redemption::Model) -> ServiceResult<()> {
    coupon_redemption::ActiveModel::from(model)
        .insert(conn)
        .await
        .map_err(|e| taken(e, "the order has a coupon redemption"))?;
    Ok(())
}

/// Takes one use of `code` if it has one left: 1 if taken, 0 if used up. One
/// conditional update, so concurrent redemptions never take more than the cap.
pub async fn take_use(conn: &impl ConnectionTrait, code: &str) -> ServiceResult<u64> {
    Ok(coupon_code::Entity::update_many()
        .col_expr(
            coupon_code::Column::UsedCount,
            Expr::col(coupon_code::Column::UsedCount).add(1),
        )
        .filter(coupon_code::Column::Code.eq(code))
        .filter(Expr::col(coupon_code::Column::UsedCount).lt(Expr::col(coupon_code::Column::UsageCap)))
        .exec(conn)
        .await?
        .rows_affected)
}

/// Gives one use of `code` back.
pub async fn give_back_use(conn: &impl ConnectionTrait, code: &str) -> ServiceResult<u64> {
    Ok(coupon_code::Entity::update_many()
        .col_expr(
            coupon_code::Column::UsedCount,
            Expr::col(coupon_code::Column::UsedCount).sub(1),
        )
        .filter(coupon_code::Column::Code.eq(code))
        .filter(coupon_code::Column::UsedCount.gt(0))
        .exec(conn)
        .await?
        .rows_affected)
}

/// Marks an order's active redemption released: 1 if it was active, 0 otherwise.
pub async fn release_redemption(conn: &impl ConnectionTrait, order_id: &str, at: DateTime<Utc>) -> ServiceResult<u64> {
    Ok(coupon_redemption::Entity::update_many()
        .col_expr(
            coupon_redemption::Column::State,
            Expr::value(redemption_state::RELEASED),
        )
        .col_expr(coupon_redemption::Column::UpdatedAt, Expr::value(at))
        .filter(coupon_redemption::Column::OrderId.eq(order_id))
        .filter(coupon_redemption::Column::State.eq(redemption_state::ACTIVE))
        .exec(conn)
        .await?
        .rows_affected)
}

/// The category of each SKU's product, by SKU code.
pub async fn sku_categories(conn: &impl ConnectionTrait, codes: &[String]) -> ServiceResult<HashMap<String, String>> {
    let skus = sku::Entity::find()
        .filter(sku::Column::Code.is_in(codes.iter().cloned()))
        .all(conn)
        .await?;
    let products: HashMap<String, String> = product::Entity::find()
        .filter(product::Column::Id.is_in(skus.iter().map(|s| s.product_id.clone())))
        .all(conn)
        .await?
        .into_iter()
        .map(|p| (p.id, p.category))
        .collect();
    Ok(skus
        .into_iter()
        .filter_map(|s| products.get(&s.product_id).map(|c| (s.code, c.clone())))
        .collect())
}

/// Whether any product is in `category` or below it.
pub async fn category_exists(conn: &impl ConnectionTrait, category: &str) -> ServiceResult<bool> {
    let found = product::Entity::find()
        .filter(
            sea_orm::Condition::any()
                .add(product::Column::Category.eq(category))
                .add(product::Column::Category.starts_with(format!("{category}/"))),
        )
        .one(conn)
        .await?;
    Ok(found.is_some())
}

/// Which of `codes` are SKUs.
pub async fn known_skus(conn: &impl ConnectionTrait, codes: &[String]) -> ServiceResult<Vec<String>> {
    Ok(sku::Entity::find()
        .filter(sku::Column::Code.is_in(codes.iter().cloned()))
        .all(conn)
        .await?
        .into_iter()
        .map(|s| s.code)
        .collect())
}
