//! Membership's tables, queries and conditional updates. Database errors are
//! translated here (a unique violation on an identifier is `AlreadyExists`).

pub(crate) mod engagement;
pub mod entities;
pub(crate) mod identity;
pub mod loyalty;
pub(crate) mod migration;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use retail_kit::db::is_unique_violation;
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::paging::Page;
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, QueryTrait,
};

pub use entities::{
    anonymous_contact, campaign, consent, contact, contact_identifier, identifier, member, member_lifecycle,
    member_merge, message, points_entry, points_lot, purchase, segment, tag, tier_change, touchpoint,
};

use crate::domain::fields::Identifier;

pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Everything the API shows of a member.
#[derive(Debug, Clone)]
pub(crate) struct MemberView {
    pub(crate) member: member::Model,
    pub(crate) identifiers: Vec<identifier::Model>,
    pub(crate) tags: Vec<tag::Model>,
    /// Newest decision per channel.
    pub(crate) consents: Vec<consent::Model>,
    /// Paid orders and refunds, oldest first (spend and lifecycle).
    pub(crate) purchases: Vec<purchase::Model>,
}

pub(crate) async fn insert_member(conn: &impl ConnectionTrait, model: member::Model) -> ServiceResult<()> {
    let active: member::ActiveModel = model.into();
    active.insert(conn).await?;
    Ok(())
}

pub(crate) async fn insert_identifier(
    conn: &impl ConnectionTrait,
    member_id: &str,
    id: &Identifier,
    now: DateTime<Utc>,
) -> ServiceResult<()> {
    identifier::ActiveModel {
        kind: Set(id.kind.as_str().to_owned()),
        channel: Set(id.channel.clone()),
        value: Set(id.value.clone()),
        member_id: Set(member_id.to_owned()),
        created_at: Set(now),
    }
    .insert(conn)
    .await
    .map_err(|e| {
        if is_unique_violation(&e) {
            ServiceError::AlreadyExists(format!(
                "the {} identifier already belongs to a member",
                id.kind.as_str()
            ))
        } else {
            e.into()
        }
    })?;
    Ok(())
}

pub(crate) async fn delete_identifier(
    conn: &impl ConnectionTrait,
    member_id: &str,
    id: &Identifier,
) -> ServiceResult<bool> {
    let result = identifier::Entity::delete_many()
        .filter(identifier::Column::Kind.eq(id.kind.as_str()))
        .filter(identifier::Column::Channel.eq(id.channel.as_str()))
        .filter(identifier::Column::Value.eq(id.value.as_str()))
        .filter(identifier::Column::MemberId.eq(member_id))
        .exec(conn)
        .await?;
    Ok(result.rows_affected > 0)
}

pub async fn find_member(conn: &impl ConnectionTrait, id: &str) -> ServiceResult<Option<member::Model>> {
    Ok(member::Entity::find_by_id(id.to_owned()).one(conn).await?)
}

pub(crate) async fn member_id_by_identifier(
    conn: &impl ConnectionTrait,
    id: &Identifier,
) -> ServiceResult<Option<String>> {
    Ok(
        identifier::Entity::find_by_id((id.kind.as_str().to_owned(), id.channel.clone(), id.value.clone()))
            .one(conn)
            .await?
            .map(|row| row.member_id),
    )
}

pub(crate) async fn view(conn: &impl ConnectionTrait, member: member::Model) -> ServiceResult<MemberView> {
    let identifiers = identifier::Entity::find()
        .filter(identifier::Column::MemberId.eq(member.id.as_str()))
        .order_by_asc(identifier::Column::Kind)
        .order_by_asc(identifier::Column::Channel)
        .order_by_asc(identifier::Column::Value)
        .all(conn)
        .await?;
    let tags = tag::Entity::find()
        .filter(tag::Column::MemberId.eq(member.id.as_str()))
        .order_by_asc(tag::Column::Path)
        .all(conn)
        .await?;
    let history = consent_history(conn, &member.id).await?;
    let mut current: BTreeMap<String, consent::Model> = BTreeMap::new();
    for decision in history {
        current.insert(decision.channel.clone(), decision);
    }
    let purchases = loyalty::purchases_after(conn, &member.id, None).await?;
    Ok(MemberView {
        member,
        identifiers,
        tags,
        consents: current.into_values().collect(),
        purchases,
    })
}

/// Every consent decision, oldest first.
pub(crate) async fn consent_history(
    conn: &impl ConnectionTrait,
    member_id: &str,
) -> ServiceResult<Vec<consent::Model>> {
    Ok(consent::Entity::find()
        .filter(consent::Column::MemberId.eq(member_id))
        .order_by_asc(consent::Column::DecidedAt)
        .order_by_asc(consent::Column::Id)
        .all(conn)
        .await?)
}

/// Sets the member's RFM segment, as a change of the member (a new version).
pub(crate) async fn set_rfm_segment(
    conn: &impl ConnectionTrait,
    member_id: &str,
    segment: Option<String>,
    now: DateTime<Utc>,
) -> ServiceResult<Standing> {
    let update = member::Entity::update_many().col_expr(member::Column::RfmSegment, Expr::value(segment));
    update_returning_standing(conn, update, member_id, now).await
}

/// Marks a committed change: bumps the version (the cache's guard) and update time.
/// A member's points and version as a statement left them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Standing {
    pub(crate) points_balance: i64,
    pub(crate) points_debt: i64,
    pub(crate) version: i64,
}

/// Runs an update of one member that also bumps its version and `updated_at`, and
/// returns the member's standing from the same statement.
pub(crate) async fn update_returning_standing(
    conn: &impl ConnectionTrait,
    update: sea_orm::UpdateMany<member::Entity>,
    member_id: &str,
    now: DateTime<Utc>,
) -> ServiceResult<Standing> {
    let mut query = update
        .col_expr(member::Column::Version, Expr::col(member::Column::Version).add(1))
        .col_expr(member::Column::UpdatedAt, Expr::value(now))
        .filter(member::Column::Id.eq(member_id))
        .into_query();
    query.returning(Query::returning().columns([
        member::Column::PointsBalance,
        member::Column::PointsDebt,
        member::Column::Version,
    ]));
    let backend = conn.get_database_backend();
    let row = conn
        .query_one_raw(backend.build(&query))
        .await?
        .ok_or_else(|| ServiceError::not_found("member", member_id))?;
    Ok(Standing {
        points_balance: row.try_get("", "points_balance")?,
        points_debt: row.try_get("", "points_debt")?,
        version: row.try_get("", "version")?,
    })
}

/// Marks a member changed: a new version (which fences older cached profiles) and
/// `updated_at`, returned with the points in one statement.
pub(crate) async fn touch(conn: &impl ConnectionTrait, member_id: &str, now: DateTime<Utc>) -> ServiceResult<Standing> {
    update_returning_standing(conn, member::Entity::update_many(), member_id, now).await
}

pub(crate) async fn update_member(
    conn: &impl ConnectionTrait,
    active: member::ActiveModel,
) -> ServiceResult<member::Model> {
    Ok(active.update(conn).await?)
}

pub(crate) async fn upsert_tag(conn: &impl ConnectionTrait, model: tag::Model) -> ServiceResult<()> {
    tag::Entity::delete_many()
        .filter(tag::Column::MemberId.eq(model.member_id.as_str()))
        .filter(tag::Column::Path.eq(model.path.as_str()))
        .exec(conn)
        .await?;
    let active: tag::ActiveModel = model.into();
    active.insert(conn).await?;
    Ok(())
}

pub(crate) async fn delete_tag(conn: &impl ConnectionTrait, member_id: &str, path: &str) -> ServiceResult<()> {
    tag::Entity::delete_many()
        .filter(tag::Column::MemberId.eq(member_id))
        .filter(tag::Column::Path.eq(path))
        .exec(conn)
        .await?;
    Ok(())
}

pub(crate) async fn insert_consent(conn: &impl ConnectionTrait, model: consent::Model) -> ServiceResult<()> {
    let active: consent::ActiveModel = model.into();
    active.insert(conn).await?;
    Ok(())
}

/// Filters of the member list.
#[derive(Debug, Default, Clone)]
pub(crate) struct MemberFilter {
    pub(crate) tier: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) tag: Option<String>,
    pub(crate) registered_from: Option<DateTime<Utc>>,
    pub(crate) registered_before: Option<DateTime<Utc>>,
}

pub(crate) async fn list_members(
    conn: &impl ConnectionTrait,
    page: &Page,
    filter: &MemberFilter,
) -> ServiceResult<Vec<member::Model>> {
    let mut query = member::Entity::find()
        .filter(member::Column::ErasedAt.is_null())
        .filter(member::Column::MergedInto.is_null())
        .order_by_asc(member::Column::Id)
        .limit(page.fetch_limit());
    if let Some(after) = &page.after {
        query = query.filter(member::Column::Id.gt(after.as_str()));
    }
    if let Some(tier) = &filter.tier {
        query = query.filter(member::Column::Tier.eq(tier.as_str()));
    }
    if let Some(region) = &filter.region {
        query = query.filter(member::Column::Region.eq(region.as_str()));
    }
    if let Some(from) = filter.registered_from {
        query = query.filter(member::Column::RegisteredAt.gte(from));
    }
    if let Some(before) = filter.registered_before {
        query = query.filter(member::Column::RegisteredAt.lt(before));
    }
    if let Some(path) = &filter.tag {
        let tagged = Query::select()
            .column(tag::Column::MemberId)
            .from(tag::Entity)
            .cond_where(
                Condition::any()
                    .add(tag::Column::Path.eq(path.as_str()))
                    .add(tag::Column::Path.like(format!("{path}/%"))),
            )
            .to_owned();
        query = query.filter(member::Column::Id.in_subquery(tagged));
    }
    Ok(query.all(conn).await?)
}

/// Removes the member's personal data irreversibly and keeps the pseudonymous rest.
pub(crate) async fn erase(conn: &impl ConnectionTrait, member_id: &str, now: DateTime<Utc>) -> ServiceResult<()> {
    member::Entity::update_many()
        .col_expr(member::Column::DisplayName, Expr::value(""))
        .col_expr(member::Column::Gender, Expr::value(""))
        .col_expr(member::Column::BirthDate, Expr::value(Option::<String>::None))
        .col_expr(member::Column::Region, Expr::value(""))
        .col_expr(member::Column::AttributesJson, Expr::value("{}"))
        .col_expr(member::Column::RfmSegment, Expr::value(Option::<String>::None))
        .col_expr(member::Column::ErasedAt, Expr::value(now))
        .filter(member::Column::Id.eq(member_id))
        .exec(conn)
        .await?;
    identifier::Entity::delete_many()
        .filter(identifier::Column::MemberId.eq(member_id))
        .exec(conn)
        .await?;
    tag::Entity::delete_many()
        .filter(tag::Column::MemberId.eq(member_id))
        .exec(conn)
        .await?;
    Ok(())
}
