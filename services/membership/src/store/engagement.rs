//! Engagement's tables: segments, campaigns, the decision per campaign and member,
//! and the message outbox.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use retail_kit::error::ServiceResult;
use retail_kit::paging::Page;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, TryInsertResult,
};

use super::entities::{campaign, contact, message, segment};
use crate::domain::engagement::ContactOutcome;

pub(crate) async fn insert_segment(conn: &impl ConnectionTrait, model: segment::Model) -> ServiceResult<()> {
    let active: segment::ActiveModel = model.into();
    active.insert(conn).await?;
    Ok(())
}

pub(crate) async fn find_segment(conn: &impl ConnectionTrait, id: &str) -> ServiceResult<Option<segment::Model>> {
    Ok(segment::Entity::find_by_id(id.to_owned()).one(conn).await?)
}

pub(crate) async fn insert_campaign(conn: &impl ConnectionTrait, model: campaign::Model) -> ServiceResult<()> {
    let active: campaign::ActiveModel = model.into();
    active.insert(conn).await?;
    Ok(())
}

pub(crate) async fn find_campaign(conn: &impl ConnectionTrait, id: &str) -> ServiceResult<Option<campaign::Model>> {
    Ok(campaign::Entity::find_by_id(id.to_owned()).one(conn).await?)
}

/// Moves the campaign from `from` to `to` if it is still in `from`; false if not.
pub(crate) async fn move_campaign(
    conn: &impl ConnectionTrait,
    id: &str,
    from: &str,
    to: &str,
    now: DateTime<Utc>,
) -> ServiceResult<bool> {
    let result = campaign::Entity::update_many()
        .col_expr(campaign::Column::State, Expr::value(to))
        .col_expr(campaign::Column::UpdatedAt, Expr::value(now))
        .filter(campaign::Column::Id.eq(id))
        .filter(campaign::Column::State.eq(from))
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Records that the planned campaign's run due at `due` is done: it runs next at
/// `next`, or, with `None`, it is sent. Conditional on the due time being
/// unchanged, so two replicas finishing the same run move it once; false if
/// another did.
pub(crate) async fn advance_campaign(
    conn: &impl ConnectionTrait,
    id: &str,
    due: Option<DateTime<Utc>>,
    next: Option<DateTime<Utc>>,
) -> ServiceResult<bool> {
    let mut update = campaign::Entity::update_many()
        .col_expr(campaign::Column::NextRunAt, Expr::value(next))
        .col_expr(campaign::Column::Sent, Expr::value(next.is_none()))
        .filter(campaign::Column::Id.eq(id))
        .filter(campaign::Column::Sent.eq(false));
    update = match due {
        Some(due) => update.filter(campaign::Column::NextRunAt.eq(due)),
        None => update.filter(campaign::Column::NextRunAt.is_null()),
    };
    Ok(update.exec(conn).await?.rows_affected == 1)
}

pub(crate) async fn campaigns_in(conn: &impl ConnectionTrait, state: &str) -> ServiceResult<Vec<campaign::Model>> {
    Ok(campaign::Entity::find()
        .filter(campaign::Column::State.eq(state))
        .order_by_asc(campaign::Column::Id)
        .all(conn)
        .await?)
}

/// A page of campaigns, newest first (ids are UUID v7), optionally only those in
/// `state`.
pub(crate) async fn list_campaigns(
    conn: &impl ConnectionTrait,
    state: Option<&str>,
    page: &Page,
) -> ServiceResult<Vec<campaign::Model>> {
    let mut query = campaign::Entity::find()
        .order_by_desc(campaign::Column::Id)
        .limit(page.fetch_limit());
    if let Some(state) = state {
        query = query.filter(campaign::Column::State.eq(state));
    }
    if let Some(after) = &page.after {
        query = query.filter(campaign::Column::Id.lt(after.as_str()));
    }
    Ok(query.all(conn).await?)
}

/// Contacted and control members of each of the campaigns `ids`:
/// `(contacted, control)` by campaign id (absent: none decided yet).
pub(crate) async fn outcome_counts(
    conn: &impl ConnectionTrait,
    ids: &[String],
) -> ServiceResult<HashMap<String, (i64, i64)>> {
    let mut out: HashMap<String, (i64, i64)> = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let rows: Vec<(String, String, i64)> = contact::Entity::find()
        .select_only()
        .column(contact::Column::CampaignId)
        .column(contact::Column::Outcome)
        .column_as(Expr::cust("CAST(COUNT(*) AS BIGINT)"), "n")
        .filter(contact::Column::CampaignId.is_in(ids.iter().cloned()))
        .group_by(contact::Column::CampaignId)
        .group_by(contact::Column::Outcome)
        .into_tuple()
        .all(conn)
        .await?;
    for (campaign_id, outcome, n) in rows {
        let entry = out.entry(campaign_id).or_default();
        if outcome == ContactOutcome::Contacted.as_str() {
            entry.0 = n;
        } else if outcome == ContactOutcome::Control.as_str() {
            entry.1 = n;
        }
    }
    Ok(out)
}

/// Serialises the decisions about one member (the frequency cap across campaigns)
/// and within one campaign (its budget) until the transaction ends: on PostgreSQL
/// both rows are locked, member first as the payment path locks it; SQLite's write
/// transactions run one at a time anyway.
pub(crate) async fn lock_for_contact(
    conn: &impl ConnectionTrait,
    member_id: &str,
    campaign_id: &str,
) -> ServiceResult<()> {
    let backend = conn.get_database_backend();
    if backend != sea_orm::DatabaseBackend::Postgres {
        return Ok(());
    }
    for (sql, id) in [
        ("SELECT id FROM members WHERE id = $1 FOR UPDATE", member_id),
        (
            "SELECT id FROM engagement_campaigns WHERE id = $1 FOR UPDATE",
            campaign_id,
        ),
    ] {
        conn.execute_raw(sea_orm::Statement::from_sql_and_values(backend, sql, [id.into()]))
            .await?;
    }
    Ok(())
}

/// Records the decision for a member unless one exists; true if this one counts.
pub(crate) async fn decide(conn: &impl ConnectionTrait, model: contact::Model) -> ServiceResult<bool> {
    let active: contact::ActiveModel = model.into();
    let result = contact::Entity::insert(active)
        .on_conflict(
            OnConflict::columns([contact::Column::CampaignId, contact::Column::MemberId])
                .do_nothing()
                .to_owned(),
        )
        .try_insert()
        .exec(conn)
        .await?;
    Ok(matches!(result, TryInsertResult::Inserted(_)))
}

pub(crate) async fn count_outcome(conn: &impl ConnectionTrait, campaign_id: &str, outcome: &str) -> ServiceResult<u64> {
    Ok(contact::Entity::find()
        .filter(contact::Column::CampaignId.eq(campaign_id))
        .filter(contact::Column::Outcome.eq(outcome))
        .count(conn)
        .await?)
}

/// Messages to the member through the channel since `since`, across campaigns.
pub(crate) async fn recent_messages(
    conn: &impl ConnectionTrait,
    member_id: &str,
    channel: &str,
    since: DateTime<Utc>,
) -> ServiceResult<u64> {
    Ok(message::Entity::find()
        .filter(message::Column::MemberId.eq(member_id))
        .filter(message::Column::Channel.eq(channel))
        .filter(message::Column::CreatedAt.gte(since))
        .count(conn)
        .await?)
}

pub(crate) async fn insert_message(conn: &impl ConnectionTrait, model: message::Model) -> ServiceResult<()> {
    let active: message::ActiveModel = model.into();
    active.insert(conn).await?;
    Ok(())
}

/// The oldest messages neither sent nor dead whose next try is due at `now`.
pub(crate) async fn pending_messages(
    conn: &impl ConnectionTrait,
    now: DateTime<Utc>,
    limit: u64,
) -> ServiceResult<Vec<message::Model>> {
    Ok(message::Entity::find()
        .filter(message::Column::SentAt.is_null())
        .filter(message::Column::DeadAt.is_null())
        .filter(
            Condition::any()
                .add(message::Column::NextAttemptAt.is_null())
                .add(message::Column::NextAttemptAt.lte(now)),
        )
        .order_by_asc(message::Column::Id)
        .limit(limit)
        .all(conn)
        .await?)
}

/// Takes a message for one try: counts the try and moves its next try to `until`,
/// on condition that nobody took it since it was read (`attempts` unchanged).
pub(crate) async fn claim_message(
    conn: &impl ConnectionTrait,
    m: &message::Model,
    until: DateTime<Utc>,
) -> ServiceResult<bool> {
    let claimed = message::Entity::update_many()
        .col_expr(message::Column::Attempts, Expr::value(m.attempts + 1))
        .col_expr(message::Column::NextAttemptAt, Expr::value(until))
        .filter(message::Column::Id.eq(m.id.as_str()))
        .filter(message::Column::Attempts.eq(m.attempts))
        .filter(message::Column::SentAt.is_null())
        .filter(message::Column::DeadAt.is_null())
        .exec(conn)
        .await?;
    Ok(claimed.rows_affected == 1)
}

pub(crate) async fn mark_message_sent(conn: &impl ConnectionTrait, id: &str, at: DateTime<Utc>) -> ServiceResult<()> {
    message::Entity::update_many()
        .col_expr(message::Column::SentAt, Expr::value(at))
        .filter(message::Column::Id.eq(id))
        .filter(message::Column::SentAt.is_null())
        .exec(conn)
        .await?;
    Ok(())
}

/// A failed try: the next is due at `next`, or, with `None`, the message is dead.
pub(crate) async fn mark_message_failed(
    conn: &impl ConnectionTrait,
    id: &str,
    next: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> ServiceResult<()> {
    let update = match next {
        Some(next) => message::Entity::update_many().col_expr(message::Column::NextAttemptAt, Expr::value(next)),
        None => message::Entity::update_many().col_expr(message::Column::DeadAt, Expr::value(now)),
    };
    update
        .filter(message::Column::Id.eq(id))
        .filter(message::Column::SentAt.is_null())
        .exec(conn)
        .await?;
    Ok(())
}

/// A page of a campaign's sent and dead-lettered messages, oldest first.
pub(crate) async fn sent_messages(
    conn: &impl ConnectionTrait,
    campaign_id: &str,
    page: &Page,
) -> ServiceResult<Vec<message::Model>> {
    let mut query = message::Entity::find()
        .filter(message::Column::CampaignId.eq(campaign_id))
        .filter(
            Condition::any()
                .add(message::Column::SentAt.is_not_null())
                .add(message::Column::DeadAt.is_not_null()),
        )
        .order_by_asc(message::Column::Id)
        .limit(page.fetch_limit());
    if let Some(after) = &page.after {
        query = query.filter(message::Column::Id.gt(after.as_str()));
    }
    Ok(query.all(conn).await?)
}

/// The members decided `outcome` in the campaign, by member id.
pub(crate) async fn decided(
    conn: &impl ConnectionTrait,
    campaign_id: &str,
    outcome: &str,
) -> ServiceResult<Vec<contact::Model>> {
    Ok(contact::Entity::find()
        .filter(contact::Column::CampaignId.eq(campaign_id))
        .filter(contact::Column::Outcome.eq(outcome))
        .order_by_asc(contact::Column::MemberId)
        .all(conn)
        .await?)
}
