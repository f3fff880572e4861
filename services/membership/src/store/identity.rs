//! Identity resolution's tables: anonymous contacts and their ids, touchpoints,
//! member merges and the lifecycle states the periodic run last saw.

use chrono::{DateTime, Utc};
use retail_kit::db::is_unique_violation;
use retail_kit::error::{ServiceError, ServiceResult};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect,
};

use super::entities::{
    anonymous_contact, consent, contact, contact_identifier, identifier, member, member_lifecycle, member_merge,
    message, points_lot, purchase, tag, touchpoint,
};
use crate::domain::fields::Identifier;

/// The contact holding `id`, if any.
pub(crate) async fn contact_by_identifier(
    conn: &impl ConnectionTrait,
    id: &Identifier,
) -> ServiceResult<Option<String>> {
    Ok(
        contact_identifier::Entity::find_by_id((id.kind.as_str().to_owned(), id.channel.clone(), id.value.clone()))
            .one(conn)
            .await?
            .map(|row| row.contact_id),
    )
}

pub(crate) async fn find_contact(
    conn: &impl ConnectionTrait,
    id: &str,
) -> ServiceResult<Option<anonymous_contact::Model>> {
    Ok(anonymous_contact::Entity::find_by_id(id.to_owned()).one(conn).await?)
}

/// Which anonymous contacts a list shows.
#[derive(Debug, Clone, Default)]
pub(crate) struct ContactFilter {
    /// Only contacts holding an id of this kind (`IdentifierKind::as_str`).
    pub(crate) identifier_kind: Option<String>,
    /// With the kind: only the contact holding this id.
    pub(crate) identifier: Option<Identifier>,
    /// Only merged (true) or only unmerged (false) contacts.
    pub(crate) merged: Option<bool>,
}

/// A page of anonymous contacts, by id (so oldest first).
pub(crate) async fn list_contacts(
    conn: &impl ConnectionTrait,
    page: &retail_kit::paging::Page,
    filter: &ContactFilter,
) -> ServiceResult<Vec<anonymous_contact::Model>> {
    let mut query = anonymous_contact::Entity::find()
        .order_by_asc(anonymous_contact::Column::Id)
        .limit(page.fetch_limit());
    if let Some(after) = &page.after {
        query = query.filter(anonymous_contact::Column::Id.gt(after.as_str()));
    }
    match filter.merged {
        Some(true) => query = query.filter(anonymous_contact::Column::MergedInto.is_not_null()),
        Some(false) => query = query.filter(anonymous_contact::Column::MergedInto.is_null()),
        None => {}
    }
    if filter.identifier_kind.is_some() || filter.identifier.is_some() {
        let mut held = sea_orm::sea_query::Query::select()
            .column(contact_identifier::Column::ContactId)
            .from(contact_identifier::Entity)
            .to_owned();
        if let Some(kind) = &filter.identifier_kind {
            held.and_where(contact_identifier::Column::Kind.eq(kind.as_str()));
        }
        if let Some(id) = &filter.identifier {
            held.and_where(contact_identifier::Column::Kind.eq(id.kind.as_str()))
                .and_where(contact_identifier::Column::Channel.eq(id.channel.as_str()))
                .and_where(contact_identifier::Column::Value.eq(id.value.as_str()));
        }
        query = query.filter(anonymous_contact::Column::Id.in_subquery(held));
    }
    Ok(query.all(conn).await?)
}

pub(crate) async fn insert_contact(conn: &impl ConnectionTrait, id: &str, now: DateTime<Utc>) -> ServiceResult<()> {
    anonymous_contact::ActiveModel {
        id: Set(id.to_owned()),
        created_at: Set(now),
        last_seen_at: Set(now),
        merged_into: Set(None),
        merged_at: Set(None),
    }
    .insert(conn)
    .await?;
    Ok(())
}

/// Gives `id` to the contact; ALREADY_EXISTS if another contact took it meanwhile.
pub(crate) async fn insert_contact_identifier(
    conn: &impl ConnectionTrait,
    contact_id: &str,
    id: &Identifier,
    now: DateTime<Utc>,
) -> ServiceResult<()> {
    contact_identifier::ActiveModel {
        kind: Set(id.kind.as_str().to_owned()),
        channel: Set(id.channel.clone()),
        value: Set(id.value.clone()),
        contact_id: Set(contact_id.to_owned()),
        created_at: Set(now),
    }
    .insert(conn)
    .await
    .map_err(|e| {
        if is_unique_violation(&e) {
            ServiceError::AlreadyExists("the identifier was taken meanwhile".into())
        } else {
            e.into()
        }
    })?;
    Ok(())
}

pub(crate) async fn contact_identifiers(
    conn: &impl ConnectionTrait,
    contact_id: &str,
) -> ServiceResult<Vec<contact_identifier::Model>> {
    Ok(contact_identifier::Entity::find()
        .filter(contact_identifier::Column::ContactId.eq(contact_id))
        .order_by_asc(contact_identifier::Column::Kind)
        .order_by_asc(contact_identifier::Column::Channel)
        .order_by_asc(contact_identifier::Column::Value)
        .all(conn)
        .await?)
}

pub(crate) async fn seen_contact(conn: &impl ConnectionTrait, id: &str, at: DateTime<Utc>) -> ServiceResult<()> {
    anonymous_contact::Entity::update_many()
        .col_expr(anonymous_contact::Column::LastSeenAt, Expr::value(at))
        .filter(anonymous_contact::Column::Id.eq(id))
        .exec(conn)
        .await?;
    Ok(())
}

/// Merges the contact into the member: its ids leave the contact (the caller gives
/// them to the member), its touchpoints name the member too, and the contact
/// records whom it became. False if it was merged already.
pub(crate) async fn merge_contact(
    conn: &impl ConnectionTrait,
    contact_id: &str,
    member_id: &str,
    now: DateTime<Utc>,
) -> ServiceResult<bool> {
    let result = anonymous_contact::Entity::update_many()
        .col_expr(anonymous_contact::Column::MergedInto, Expr::value(member_id))
        .col_expr(anonymous_contact::Column::MergedAt, Expr::value(now))
        .filter(anonymous_contact::Column::Id.eq(contact_id))
        .filter(anonymous_contact::Column::MergedInto.is_null())
        .exec(conn)
        .await?;
    if result.rows_affected != 1 {
        return Ok(false);
    }
    contact_identifier::Entity::delete_many()
        .filter(contact_identifier::Column::ContactId.eq(contact_id))
        .exec(conn)
        .await?;
    touchpoint::Entity::update_many()
        .col_expr(touchpoint::Column::MemberId, Expr::value(member_id))
        .filter(touchpoint::Column::ContactId.eq(contact_id))
        .exec(conn)
        .await?;
    Ok(true)
}

pub(crate) async fn member_identifier_count(conn: &impl ConnectionTrait, member_id: &str) -> ServiceResult<u64> {
    Ok(identifier::Entity::find()
        .filter(identifier::Column::MemberId.eq(member_id))
        .count(conn)
        .await?)
}

pub(crate) async fn insert_touchpoint(conn: &impl ConnectionTrait, model: touchpoint::Model) -> ServiceResult<()> {
    let active: touchpoint::ActiveModel = model.into();
    active.insert(conn).await?;
    Ok(())
}

/// The member's touchpoints so far (its contacts' included).
pub(crate) async fn member_touch_count(conn: &impl ConnectionTrait, member_id: &str) -> ServiceResult<u64> {
    Ok(touchpoint::Entity::find()
        .filter(touchpoint::Column::MemberId.eq(member_id))
        .count(conn)
        .await?)
}

/// The contact's latest touchpoints, newest first.
pub(crate) async fn contact_touchpoints(
    conn: &impl ConnectionTrait,
    contact_id: &str,
    limit: u64,
) -> ServiceResult<Vec<touchpoint::Model>> {
    Ok(touchpoint::Entity::find()
        .filter(touchpoint::Column::ContactId.eq(contact_id))
        .order_by_desc(touchpoint::Column::Id)
        .limit(limit)
        .all(conn)
        .await?)
}

/// Locks the members of a merge on PostgreSQL, in id order (so two merges of the
/// same members wait for each other instead of deadlocking); SQLite's write
/// transactions run one at a time anyway.
pub(crate) async fn lock_members(conn: &impl ConnectionTrait, ids: &[&str]) -> ServiceResult<()> {
    let backend = conn.get_database_backend();
    if backend != sea_orm::DatabaseBackend::Postgres {
        return Ok(());
    }
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    for id in ids {
        conn.execute_raw(sea_orm::Statement::from_sql_and_values(
            backend,
            "SELECT id FROM members WHERE id = $1 FOR UPDATE",
            [id.into()],
        ))
        .await?;
    }
    Ok(())
}

/// Moves every row of the merged member that follows the person to the survivor:
/// identifiers, purchases, lots, consent decisions, touchpoints, messages, and the
/// campaign decisions the survivor has none of for that campaign. Returns the
/// identifiers and purchases moved.
pub(crate) async fn move_member_rows(
    conn: &impl ConnectionTrait,
    merged: &str,
    survivor: &str,
) -> ServiceResult<(u64, u64)> {
    let identifiers = identifier::Entity::update_many()
        .col_expr(identifier::Column::MemberId, Expr::value(survivor))
        .filter(identifier::Column::MemberId.eq(merged))
        .exec(conn)
        .await?
        .rows_affected;
    let purchases = purchase::Entity::update_many()
        .col_expr(purchase::Column::MemberId, Expr::value(survivor))
        .filter(purchase::Column::MemberId.eq(merged))
        .exec(conn)
        .await?
        .rows_affected;
    points_lot::Entity::update_many()
        .col_expr(points_lot::Column::MemberId, Expr::value(survivor))
        .filter(points_lot::Column::MemberId.eq(merged))
        .exec(conn)
        .await?;
    consent::Entity::update_many()
        .col_expr(consent::Column::MemberId, Expr::value(survivor))
        .filter(consent::Column::MemberId.eq(merged))
        .exec(conn)
        .await?;
    touchpoint::Entity::update_many()
        .col_expr(touchpoint::Column::MemberId, Expr::value(survivor))
        .filter(touchpoint::Column::MemberId.eq(merged))
        .exec(conn)
        .await?;
    message::Entity::update_many()
        .col_expr(message::Column::MemberId, Expr::value(survivor))
        .filter(message::Column::MemberId.eq(merged))
        .exec(conn)
        .await?;
    member::Entity::update_many()
        .col_expr(member::Column::MergedInto, Expr::value(survivor))
        .filter(member::Column::MergedInto.eq(merged))
        .exec(conn)
        .await?;
    anonymous_contact::Entity::update_many()
        .col_expr(anonymous_contact::Column::MergedInto, Expr::value(survivor))
        .filter(anonymous_contact::Column::MergedInto.eq(merged))
        .exec(conn)
        .await?;
    let survivors_campaigns: Vec<String> = contact::Entity::find()
        .filter(contact::Column::MemberId.eq(survivor))
        .all(conn)
        .await?
        .into_iter()
        .map(|c| c.campaign_id)
        .collect();
    for decision in contact::Entity::find()
        .filter(contact::Column::MemberId.eq(merged))
        .all(conn)
        .await?
    {
        if survivors_campaigns.contains(&decision.campaign_id) {
            continue;
        }
        contact::Entity::delete_many()
            .filter(contact::Column::CampaignId.eq(decision.campaign_id.as_str()))
            .filter(contact::Column::MemberId.eq(merged))
            .exec(conn)
            .await?;
        let moved: contact::ActiveModel = contact::Model {
            member_id: survivor.to_owned(),
            ..decision
        }
        .into();
        moved.insert(conn).await?;
    }
    Ok((identifiers, purchases))
}

/// The member's tags.
pub(crate) async fn tags_of(conn: &impl ConnectionTrait, member_id: &str) -> ServiceResult<Vec<tag::Model>> {
    Ok(tag::Entity::find()
        .filter(tag::Column::MemberId.eq(member_id))
        .all(conn)
        .await?)
}

/// Sets the member's RFM segment without a new version (the merge settles the
/// survivor's version).
pub(crate) async fn inherit_rfm_segment(
    conn: &impl ConnectionTrait,
    member_id: &str,
    segment: Option<String>,
) -> ServiceResult<()> {
    member::Entity::update_many()
        .col_expr(member::Column::RfmSegment, Expr::value(segment))
        .filter(member::Column::Id.eq(member_id))
        .exec(conn)
        .await?;
    Ok(())
}

/// Marks the member merged into `survivor` with version `version`, emptying its
/// points (moved by the caller's ledger entries), if it is still live and unmerged.
pub(crate) async fn mark_merged(
    conn: &impl ConnectionTrait,
    merged: &str,
    survivor: &str,
    version: i64,
    now: DateTime<Utc>,
) -> ServiceResult<bool> {
    let result = member::Entity::update_many()
        .col_expr(member::Column::MergedInto, Expr::value(survivor))
        .col_expr(member::Column::MergedAt, Expr::value(now))
        .col_expr(member::Column::PointsBalance, Expr::value(0i64))
        .col_expr(member::Column::PointsDebt, Expr::value(0i64))
        .col_expr(member::Column::Version, Expr::value(version))
        .col_expr(member::Column::UpdatedAt, Expr::value(now))
        .filter(member::Column::Id.eq(merged))
        .filter(member::Column::MergedInto.is_null())
        .filter(member::Column::ErasedAt.is_null())
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Sets the survivor's points, tier and version after a merge, if it is still live
/// and unmerged at the version read.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn settle_survivor(
    conn: &impl ConnectionTrait,
    survivor: &str,
    read_version: i64,
    balance: i64,
    debt: i64,
    tier: &str,
    version: i64,
    now: DateTime<Utc>,
) -> ServiceResult<bool> {
    let result = member::Entity::update_many()
        .col_expr(member::Column::PointsBalance, Expr::value(balance))
        .col_expr(member::Column::PointsDebt, Expr::value(debt))
        .col_expr(member::Column::Tier, Expr::value(tier))
        .col_expr(member::Column::Version, Expr::value(version))
        .col_expr(member::Column::UpdatedAt, Expr::value(now))
        .filter(member::Column::Id.eq(survivor))
        .filter(member::Column::Version.eq(read_version))
        .filter(member::Column::MergedInto.is_null())
        .filter(member::Column::ErasedAt.is_null())
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

pub(crate) async fn insert_merge(conn: &impl ConnectionTrait, model: member_merge::Model) -> ServiceResult<()> {
    let active: member_merge::ActiveModel = model.into();
    active.insert(conn).await.map_err(|e| {
        if is_unique_violation(&e) {
            ServiceError::FailedPrecondition("the member was merged already".into())
        } else {
            e.into()
        }
    })?;
    Ok(())
}

/// The lifecycle state the periodic run last saw for the member.
pub(crate) async fn seen_lifecycle(conn: &impl ConnectionTrait, member_id: &str) -> ServiceResult<Option<String>> {
    Ok(member_lifecycle::Entity::find_by_id(member_id.to_owned())
        .one(conn)
        .await?
        .map(|row| row.state))
}

/// Records the first state seen for the member unless one is recorded.
pub(crate) async fn first_lifecycle(
    conn: &impl ConnectionTrait,
    member_id: &str,
    state: &str,
    at: DateTime<Utc>,
) -> ServiceResult<()> {
    let active: member_lifecycle::ActiveModel = member_lifecycle::Model {
        member_id: member_id.to_owned(),
        state: state.to_owned(),
        changed_at: at,
    }
    .into();
    member_lifecycle::Entity::insert(active)
        .on_conflict(
            OnConflict::column(member_lifecycle::Column::MemberId)
                .do_nothing()
                .to_owned(),
        )
        .try_insert()
        .exec(conn)
        .await?;
    Ok(())
}

/// Moves the recorded state from `from` to `to`; false if another run did already.
pub(crate) async fn move_lifecycle(
    conn: &impl ConnectionTrait,
    member_id: &str,
    from: &str,
    to: &str,
    at: DateTime<Utc>,
) -> ServiceResult<bool> {
    let result = member_lifecycle::Entity::update_many()
        .col_expr(member_lifecycle::Column::State, Expr::value(to))
        .col_expr(member_lifecycle::Column::ChangedAt, Expr::value(at))
        .filter(member_lifecycle::Column::MemberId.eq(member_id))
        .filter(member_lifecycle::Column::State.eq(from))
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// The members merged into `survivor` (erased with it).
pub(crate) async fn merged_into(conn: &impl ConnectionTrait, survivor: &str) -> ServiceResult<Vec<String>> {
    Ok(member::Entity::find()
        .filter(member::Column::MergedInto.eq(survivor))
        .all(conn)
        .await?
        .into_iter()
        .map(|m| m.id)
        .collect())
}

/// Follows a merged member to its survivor; the id itself when not merged, `None`
/// when unknown.
pub(crate) async fn resolve_member(conn: &impl ConnectionTrait, id: &str) -> ServiceResult<Option<String>> {
    let mut id = id.to_owned();
    for _ in 0..16 {
        match member::Entity::find_by_id(id.clone()).one(conn).await? {
            Some(m) => match m.merged_into {
                Some(next) => id = next,
                None => return Ok(Some(id)),
            },
            None => return Ok(None),
        }
    }
    Ok(None)
}

/// Forgets every lifecycle state seen (no lifecycle-change campaign runs).
pub(crate) async fn forget_lifecycles(conn: &impl ConnectionTrait) -> ServiceResult<()> {
    member_lifecycle::Entity::delete_many().exec(conn).await?;
    Ok(())
}
