//! Channel-partner's tables and queries.

pub mod entities;
pub mod ledgers;
pub mod migration;
pub mod policy;

use chrono::{DateTime, Utc};
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::paging::Page;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter, QueryOrder, QuerySelect};

pub use entities::{
    catalog_item, deal_lock, deal_lock_key, discount_rule, entry, key_customer, lead, lead_offer, ledger, level_change,
    lot, opportunity, order_points, partner, price_range, quote, quote_trail, redemption, redemption_take, sale,
    sales_rep, special_discount, special_discount_decision, stage_change, status_change, target, visit,
};

pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

pub async fn partner(conn: &impl ConnectionTrait, id: &str) -> ServiceResult<Option<partner::Model>> {
    Ok(partner::Entity::find_by_id(id.to_owned()).one(conn).await?)
}

/// Which partners a list returns.
#[derive(Debug, Clone, Default)]
pub struct PartnerFilter {
    pub state: Option<String>,
    /// A partner principal's own organisation only.
    pub only: Option<String>,
}

pub async fn list_partners(
    conn: &impl ConnectionTrait,
    filter: &PartnerFilter,
    page: &Page,
) -> ServiceResult<Vec<partner::Model>> {
    let mut q = partner::Entity::find().order_by_asc(partner::Column::Id);
    if let Some(state) = &filter.state {
        q = q.filter(partner::Column::State.eq(state.as_str()));
    }
    if let Some(only) = &filter.only {
        q = q.filter(partner::Column::Id.eq(only.as_str()));
    }
    if let Some(after) = &page.after {
        q = q.filter(partner::Column::Id.gt(after.as_str()));
    }
    Ok(q.limit(page.fetch_limit()).all(conn).await?)
}

/// Takes the partner's row lock for the rest of the transaction (PostgreSQL; SQLite
/// serialises writers anyway): changes that must see each other, like targets that
/// must not overlap, are made one after the other. False if there is no such
/// partner.
pub async fn lock_partner(conn: &impl ConnectionTrait, id: &str) -> ServiceResult<bool> {
    let r = partner::Entity::update_many()
        .col_expr(partner::Column::Level, Expr::col(partner::Column::Level))
        .filter(partner::Column::Id.eq(id))
        .exec(conn)
        .await?;
    Ok(r.rows_affected == 1)
}

/// The same for a sales rep.
pub async fn lock_rep(conn: &impl ConnectionTrait, id: &str) -> ServiceResult<bool> {
    let r = sales_rep::Entity::update_many()
        .col_expr(
            sales_rep::Column::DisplayName,
            Expr::col(sales_rep::Column::DisplayName),
        )
        .filter(sales_rep::Column::Id.eq(id))
        .exec(conn)
        .await?;
    Ok(r.rows_affected == 1)
}

/// Moves a partner from one of `from` to `to`; false if it was no longer in one.
pub async fn set_partner_state(
    conn: &impl ConnectionTrait,
    id: &str,
    from: &str,
    to: &str,
    at: DateTime<Utc>,
) -> ServiceResult<bool> {
    let r = partner::Entity::update_many()
        .col_expr(partner::Column::State, Expr::value(to))
        .col_expr(partner::Column::UpdatedAt, Expr::value(at))
        .filter(partner::Column::Id.eq(id))
        .filter(partner::Column::State.eq(from))
        .exec(conn)
        .await?;
    Ok(r.rows_affected == 1)
}

pub async fn set_partner_level(
    conn: &impl ConnectionTrait,
    id: &str,
    level: &str,
    at: DateTime<Utc>,
) -> ServiceResult<()> {
    partner::Entity::update_many()
        .col_expr(partner::Column::Level, Expr::value(level))
        .col_expr(partner::Column::UpdatedAt, Expr::value(at))
        .filter(partner::Column::Id.eq(id))
        .exec(conn)
        .await?;
    Ok(())
}

pub async fn status_changes(
    conn: &impl ConnectionTrait,
    partner_id: &str,
    page: &Page,
) -> ServiceResult<Vec<status_change::Model>> {
    let mut q = status_change::Entity::find()
        .filter(status_change::Column::PartnerId.eq(partner_id))
        .order_by_asc(status_change::Column::Id);
    if let Some(after) = &page.after {
        q = q.filter(status_change::Column::Id.gt(after.as_str()));
    }
    Ok(q.limit(page.fetch_limit()).all(conn).await?)
}

pub async fn level_changes(
    conn: &impl ConnectionTrait,
    partner_id: &str,
    page: &Page,
) -> ServiceResult<Vec<level_change::Model>> {
    let mut q = level_change::Entity::find()
        .filter(level_change::Column::PartnerId.eq(partner_id))
        .order_by_asc(level_change::Column::Id);
    if let Some(after) = &page.after {
        q = q.filter(level_change::Column::Id.gt(after.as_str()));
    }
    Ok(q.limit(page.fetch_limit()).all(conn).await?)
}

pub async fn all_partners(conn: &impl ConnectionTrait) -> ServiceResult<Vec<partner::Model>> {
    Ok(partner::Entity::find()
        .order_by_asc(partner::Column::Id)
        .all(conn)
        .await?)
}

pub async fn rep(conn: &impl ConnectionTrait, id: &str) -> ServiceResult<Option<sales_rep::Model>> {
    Ok(sales_rep::Entity::find_by_id(id.to_owned()).one(conn).await?)
}

pub async fn rep_by_user(conn: &impl ConnectionTrait, user_id: &str) -> ServiceResult<Option<sales_rep::Model>> {
    Ok(sales_rep::Entity::find()
        .filter(sales_rep::Column::UserId.eq(user_id))
        .one(conn)
        .await?)
}

/// Which reps a list returns.
#[derive(Debug, Clone, Default)]
pub struct RepFilter {
    /// `Some("")` = the brand's own reps.
    pub partner: Option<String>,
}

pub async fn list_reps(
    conn: &impl ConnectionTrait,
    filter: &RepFilter,
    page: &Page,
) -> ServiceResult<Vec<sales_rep::Model>> {
    let mut q = sales_rep::Entity::find().order_by_asc(sales_rep::Column::Id);
    if let Some(p) = &filter.partner {
        q = q.filter(sales_rep::Column::PartnerId.eq(p.as_str()));
    }
    if let Some(after) = &page.after {
        q = q.filter(sales_rep::Column::Id.gt(after.as_str()));
    }
    Ok(q.limit(page.fetch_limit()).all(conn).await?)
}

pub async fn sale_exists(
    conn: &impl ConnectionTrait,
    order_id: &str,
    kind: &str,
    reference: &str,
) -> ServiceResult<bool> {
    Ok(sale::Entity::find()
        .filter(sale::Column::OrderId.eq(order_id))
        .filter(sale::Column::Kind.eq(kind))
        .filter(sale::Column::Reference.eq(reference))
        .one(conn)
        .await?
        .is_some())
}

#[derive(Debug, FromQueryResult)]
struct Sum {
    total: Option<i64>,
}

/// Whose sales a sum counts.
#[derive(Debug, Clone, Copy)]
pub enum Seller<'a> {
    Partner(&'a str),
    Rep(&'a str),
}

/// Net attributed sales of `seller` in `[from, to)`.
pub async fn net_sales(
    conn: &impl ConnectionTrait,
    seller: Seller<'_>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> ServiceResult<i64> {
    // SUM of BIGINT is NUMERIC on PostgreSQL: cast back.
    let q = sale::Entity::find()
        .select_only()
        .column_as(Expr::cust("CAST(SUM(amount_minor) AS BIGINT)"), "total")
        .filter(sale::Column::OccurredAt.gte(from))
        .filter(sale::Column::OccurredAt.lt(to));
    let q = match seller {
        Seller::Partner(p) => q.filter(sale::Column::PartnerId.eq(p)),
        Seller::Rep(r) => q.filter(sale::Column::RepId.eq(r)),
    };
    let row = q.into_model::<Sum>().one(conn).await?;
    Ok(row.and_then(|r| r.total).unwrap_or(0))
}

/// Net attributed sales in `[from, to)` of every partner (`by_rep` false) or every
/// rep, in one grouped query: what a ranking compares.
pub async fn net_sales_of_all(
    conn: &impl ConnectionTrait,
    by_rep: bool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> ServiceResult<std::collections::HashMap<String, i64>> {
    let key = if by_rep {
        sale::Column::RepId
    } else {
        sale::Column::PartnerId
    };
    let rows: Vec<(String, Option<i64>)> = sale::Entity::find()
        .select_only()
        .column(key)
        .column_as(Expr::cust("CAST(SUM(amount_minor) AS BIGINT)"), "total")
        .filter(sale::Column::OccurredAt.gte(from))
        .filter(sale::Column::OccurredAt.lt(to))
        .group_by(key)
        .into_tuple()
        .all(conn)
        .await?;
    Ok(rows.into_iter().map(|(k, total)| (k, total.unwrap_or(0))).collect())
}

pub async fn target(conn: &impl ConnectionTrait, id: &str) -> ServiceResult<Option<target::Model>> {
    Ok(target::Entity::find_by_id(id.to_owned()).one(conn).await?)
}

/// Targets of the subject whose period overlaps `[start, end)`.
pub async fn overlapping_targets(
    conn: &impl ConnectionTrait,
    subject_kind: &str,
    partner_id: &str,
    rep_id: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> ServiceResult<Vec<target::Model>> {
    Ok(target::Entity::find()
        .filter(target::Column::SubjectKind.eq(subject_kind))
        .filter(target::Column::PartnerId.eq(partner_id))
        .filter(target::Column::RepId.eq(rep_id))
        .filter(target::Column::PeriodStart.lt(end))
        .filter(target::Column::PeriodEnd.gt(start))
        .all(conn)
        .await?)
}

/// Targets of the same kind of subject and the same period.
pub async fn peer_targets(conn: &impl ConnectionTrait, t: &target::Model) -> ServiceResult<Vec<target::Model>> {
    Ok(target::Entity::find()
        .filter(target::Column::SubjectKind.eq(t.subject_kind.as_str()))
        .filter(target::Column::PeriodKind.eq(t.period_kind.as_str()))
        .filter(target::Column::PeriodStart.eq(t.period_start))
        .all(conn)
        .await?)
}

/// Open (not yet attained) targets of a seller whose period holds `at`.
pub async fn open_targets_at(
    conn: &impl ConnectionTrait,
    seller: Seller<'_>,
    at: DateTime<Utc>,
) -> ServiceResult<Vec<target::Model>> {
    let q = target::Entity::find()
        .filter(target::Column::AttainedAt.is_null())
        .filter(target::Column::PeriodStart.lte(at))
        .filter(target::Column::PeriodEnd.gt(at));
    let q = match seller {
        Seller::Partner(p) => q
            .filter(target::Column::SubjectKind.eq("partner"))
            .filter(target::Column::PartnerId.eq(p)),
        Seller::Rep(r) => q
            .filter(target::Column::SubjectKind.eq("rep"))
            .filter(target::Column::RepId.eq(r)),
    };
    Ok(q.all(conn).await?)
}

/// Marks a target attained unless it was already.
pub async fn mark_attained(conn: &impl ConnectionTrait, id: &str, at: DateTime<Utc>) -> ServiceResult<bool> {
    let r = target::Entity::update_many()
        .col_expr(target::Column::AttainedAt, Expr::value(Some(at)))
        .filter(target::Column::Id.eq(id))
        .filter(target::Column::AttainedAt.is_null())
        .exec(conn)
        .await?;
    Ok(r.rows_affected == 1)
}

/// Which targets a list returns.
#[derive(Debug, Clone, Default)]
pub struct TargetFilter {
    pub subject: Option<(String, String, String)>,
    /// A partner principal's own only.
    pub partner: Option<String>,
}

pub async fn list_targets(
    conn: &impl ConnectionTrait,
    filter: &TargetFilter,
    page: &Page,
) -> ServiceResult<Vec<target::Model>> {
    let mut q = target::Entity::find().order_by_asc(target::Column::Id);
    if let Some((kind, partner, rep)) = &filter.subject {
        q = q
            .filter(target::Column::SubjectKind.eq(kind.as_str()))
            .filter(target::Column::PartnerId.eq(partner.as_str()))
            .filter(target::Column::RepId.eq(rep.as_str()));
    }
    if let Some(p) = &filter.partner {
        q = q.filter(target::Column::PartnerId.eq(p.as_str()));
    }
    if let Some(after) = &page.after {
        q = q.filter(target::Column::Id.gt(after.as_str()));
    }
    Ok(q.limit(page.fetch_limit()).all(conn).await?)
}

/// An unreadable stored value.
pub fn corrupt(what: &str, value: &str) -> ServiceError {
    ServiceError::internal(anyhow::anyhow!("unknown stored {what} {value:?}"))
}
