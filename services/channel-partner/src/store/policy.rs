//! The price policy's tables: discount rules.

use chrono::{DateTime, Utc};
use retail_kit::error::ServiceResult;
use retail_kit::paging::Page;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::discount_rule;

pub async fn rule(conn: &impl ConnectionTrait, id: &str) -> ServiceResult<Option<discount_rule::Model>> {
    Ok(discount_rule::Entity::find_by_id(id.to_owned()).one(conn).await?)
}

pub async fn list_rules(conn: &impl ConnectionTrait, page: &Page) -> ServiceResult<Vec<discount_rule::Model>> {
    let mut q = discount_rule::Entity::find().order_by_asc(discount_rule::Column::Id);
    if let Some(after) = &page.after {
        q = q.filter(discount_rule::Column::Id.gt(after.as_str()));
    }
    Ok(q.limit(page.fetch_limit()).all(conn).await?)
}

/// Stores a rule's changed `valid_until` and `display_name`; whether it existed.
pub async fn update_rule(conn: &impl ConnectionTrait, rule: &discount_rule::Model) -> ServiceResult<bool> {
    let res = discount_rule::Entity::update_many()
        .col_expr(discount_rule::Column::ValidUntil, Expr::value(rule.valid_until))
        .col_expr(
            discount_rule::Column::DisplayName,
            Expr::value(rule.display_name.as_str()),
        )
        .filter(discount_rule::Column::Id.eq(rule.id.as_str()))
        .exec(conn)
        .await?;
    Ok(res.rows_affected > 0)
}

/// Deletes a rule; whether it existed.
pub async fn delete_rule(conn: &impl ConnectionTrait, id: &str) -> ServiceResult<bool> {
    let res = discount_rule::Entity::delete_by_id(id.to_owned()).exec(conn).await?;
    Ok(res.rows_affected > 0)
}

/// The rules valid at `at` (the evaluation then filters them by level).
pub async fn rules_in_force(
    conn: &impl ConnectionTrait,
    at: DateTime<Utc>,
) -> ServiceResult<Vec<discount_rule::Model>> {
    Ok(discount_rule::Entity::find()
        .filter(discount_rule::Column::ValidFrom.lte(at))
        .filter(
            Condition::any()
                .add(discount_rule::Column::ValidUntil.is_null())
                .add(discount_rule::Column::ValidUntil.gt(at)),
        )
        .order_by_asc(discount_rule::Column::Id)
        .all(conn)
        .await?)
}
