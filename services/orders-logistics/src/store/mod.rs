//! Orders-logistics' tables and queries. State changes are conditional updates on the
//! state read (`... WHERE state IN (...)`), so two racing changes of one order cannot
//! both pass; CHECK constraints keep refunds within payments and returns within
//! purchases.

pub mod entities;
pub mod migration;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::idempotency::{IdempotencyKey, Stored};
use retail_kit::paging::Page;
use sea_orm::sea_query::{Expr, ExprTrait, SimpleExpr};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait,
};

pub use entities::{line, order, order_event, order_return, rating, return_line, saga, stock_work};

pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Saga states.
pub mod saga_state {
    pub const STARTED: &str = "started";
    pub const DONE: &str = "done";
    pub const FAILED: &str = "failed";
}

/// Everything the API shows of an order.
#[derive(Debug, Clone)]
pub struct OrderView {
    pub order: order::Model,
    pub lines: Vec<line::Model>,
}

/// A return with its lines.
#[derive(Debug, Clone)]
pub struct ReturnView {
    pub ret: order_return::Model,
    pub lines: Vec<return_line::Model>,
}

/// Inserts the saga row; `false` if its request key is taken (or, by chance, its id).
pub async fn insert_saga(conn: &impl ConnectionTrait, model: saga::Model) -> ServiceResult<bool> {
    match saga::Entity::insert(saga::ActiveModel::from(model))
        .exec_without_returning(conn)
        .await
    {
        Ok(_) => Ok(true),
        Err(err) if retail_kit::db::is_unique_violation(&err) => Ok(false),
        // A busy database or a deadlock claimed nothing: the error answers ABORTED.
        Err(err) => Err(err.into()),
    }
}

pub async fn saga_by_key(conn: &impl ConnectionTrait, key: &str) -> ServiceResult<Option<saga::Model>> {
    Ok(saga::Entity::find()
        .filter(saga::Column::RequestKey.eq(key))
        .one(conn)
        .await?)
}

/// Removes a failed saga so that its request id can be tried again.
pub async fn forget_failed_saga(conn: &impl ConnectionTrait, order_id: &str) -> ServiceResult<bool> {
    let r = saga::Entity::delete_many()
        .filter(saga::Column::OrderId.eq(order_id))
        .filter(saga::Column::State.eq(saga_state::FAILED))
        .exec(conn)
        .await?;
    Ok(r.rows_affected == 1)
}

/// Moves a started saga to `step` (still started), or to a final state. True when
/// this call made the change: a saga finished or compensated by someone else is
/// not changed again.
pub async fn saga_progress(
    conn: &impl ConnectionTrait,
    order_id: &str,
    state: &str,
    step: &str,
    error: &str,
    now: DateTime<Utc>,
) -> ServiceResult<bool> {
    let r = saga_progress_update(order_id, state, step, error, now)
        .exec(conn)
        .await?;
    Ok(r.rows_affected == 1)
}

/// The update of [`saga_progress`], for a [`retail_kit::db::GuardedWrite`].
pub fn saga_progress_update(
    order_id: &str,
    state: &str,
    step: &str,
    error: &str,
    now: DateTime<Utc>,
) -> sea_orm::UpdateMany<saga::Entity> {
    saga::Entity::update_many()
        .col_expr(saga::Column::State, Expr::value(state))
        .col_expr(saga::Column::Step, Expr::value(step))
        .col_expr(
            saga::Column::Error,
            Expr::value(error.chars().take(500).collect::<String>()),
        )
        .col_expr(saga::Column::UpdatedAt, Expr::value(now))
        .filter(saga::Column::OrderId.eq(order_id))
        .filter(saga::Column::State.eq(saga_state::STARTED))
}

/// Sagas still started and not touched since `before`: their process died or hung.
pub async fn stale_sagas(
    conn: &impl ConnectionTrait,
    before: DateTime<Utc>,
    limit: u64,
) -> ServiceResult<Vec<saga::Model>> {
    Ok(saga::Entity::find()
        .filter(saga::Column::State.eq(saga_state::STARTED))
        .filter(saga::Column::UpdatedAt.lt(before))
        .order_by_asc(saga::Column::UpdatedAt)
        .limit(limit)
        .all(conn)
        .await?)
}

pub async fn find_order(conn: &impl ConnectionTrait, id: &str) -> ServiceResult<Option<order::Model>> {
    Ok(order::Entity::find_by_id(id.to_owned()).one(conn).await?)
}

/// The order placed from a quote, if any.
pub async fn order_of_quote(conn: &impl ConnectionTrait, quote: &str) -> ServiceResult<Option<order::Model>> {
    Ok(order::Entity::find()
        .filter(order::Column::Quote.eq(quote))
        .one(conn)
        .await?)
}

/// An order with its lines in order, in one query.
pub async fn find_view(conn: &impl ConnectionTrait, id: &str) -> ServiceResult<Option<OrderView>> {
    let found = order::Entity::find_by_id(id.to_owned())
        .find_with_related(line::Entity)
        .order_by_asc(line::Column::Ordinal)
        .all(conn)
        .await?;
    Ok(found
        .into_iter()
        .next()
        .map(|(order, lines)| OrderView { order, lines }))
}

/// An order with its lines, and what `key` stored (see
/// [`IdempotencyKey::stored_columns`]), in one query. No order, nothing stored: the
/// caller answers NOT_FOUND first.
pub async fn find_view_keyed(
    conn: &impl ConnectionTrait,
    id: &str,
    key: Option<&IdempotencyKey>,
) -> ServiceResult<(Option<OrderView>, Stored)> {
    let Some(key) = key else {
        return Ok((find_view(conn, id).await?, Stored::default()));
    };
    let mut select = order::Entity::find_by_id(id.to_owned())
        .find_with_related(line::Entity)
        .order_by_asc(line::Column::Ordinal);
    for (expr, alias) in key.stored_columns() {
        select = select.expr_as(expr, alias);
    }
    let rows = conn.query_all(&select.into_query()).await?;
    let Some(first) = rows.first() else {
        return Ok((None, Stored::default()));
    };
    // The prefixes `find_with_related` gives the two entities' columns.
    let order = order::Model::from_query_result(first, "A_")?;
    let mut lines = Vec::with_capacity(rows.len());
    for row in &rows {
        if let Some(line) = line::Model::from_query_result_optional(row, "B_")? {
            lines.push(line);
        }
    }
    let stored = key.stored_in(first)?;
    Ok((Some(OrderView { order, lines }), stored))
}

pub async fn lines_of(conn: &impl ConnectionTrait, order_id: &str) -> ServiceResult<Vec<line::Model>> {
    Ok(line::Entity::find()
        .filter(line::Column::OrderId.eq(order_id))
        .order_by_asc(line::Column::Ordinal)
        .all(conn)
        .await?)
}

pub async fn view(conn: &impl ConnectionTrait, order: order::Model) -> ServiceResult<OrderView> {
    let lines = lines_of(conn, &order.id).await?;
    Ok(OrderView { order, lines })
}

/// Views of many orders, in their order.
pub async fn views(conn: &impl ConnectionTrait, orders: Vec<order::Model>) -> ServiceResult<Vec<OrderView>> {
    if orders.is_empty() {
        return Ok(Vec::new());
    }
    let mut lines: HashMap<String, Vec<line::Model>> = HashMap::new();
    for l in line::Entity::find()
        .filter(line::Column::OrderId.is_in(orders.iter().map(|o| o.id.clone())))
        .order_by_asc(line::Column::Ordinal)
        .all(conn)
        .await?
    {
        lines.entry(l.order_id.clone()).or_default().push(l);
    }
    Ok(orders
        .into_iter()
        .map(|order| OrderView {
            lines: lines.remove(&order.id).unwrap_or_default(),
            order,
        })
        .collect())
}

/// Column changes that go with a state change.
pub type Changes = Vec<(order::Column, SimpleExpr)>;

/// Moves an order from one of `from` to `to` with `changes`. True when this call
/// made the change.
pub async fn transition(
    conn: &impl ConnectionTrait,
    order_id: &str,
    from: &[&str],
    to: &str,
    changes: Changes,
    now: DateTime<Utc>,
) -> ServiceResult<bool> {
    let update = transition_update(order_id, from, to, changes, now);
    Ok(update.exec(conn).await?.rows_affected == 1)
}

/// The update of [`transition`], for a [`retail_kit::db::GuardedWrite`].
pub fn transition_update(
    order_id: &str,
    from: &[&str],
    to: &str,
    changes: Changes,
    now: DateTime<Utc>,
) -> sea_orm::UpdateMany<order::Entity> {
    let mut update = order::Entity::update_many()
        .col_expr(order::Column::State, Expr::value(to))
        .col_expr(order::Column::UpdatedAt, Expr::value(now))
        .filter(order::Column::Id.eq(order_id))
        .filter(order::Column::State.is_in(from.iter().copied()));
    for (col, value) in changes {
        update = update.col_expr(col, value);
    }
    update
}

/// Adds to the refunded amount if it stays within the payment.
pub async fn add_refund(conn: &impl ConnectionTrait, order_id: &str, amount: i64) -> ServiceResult<bool> {
    let r = order::Entity::update_many()
        .col_expr(
            order::Column::RefundedMinor,
            Expr::col(order::Column::RefundedMinor).add(amount),
        )
        .filter(order::Column::Id.eq(order_id))
        .filter(
            Expr::col(order::Column::RefundedMinor)
                .add(amount)
                .lte(Expr::col(order::Column::PaidMinor)),
        )
        .exec(conn)
        .await?;
    Ok(r.rows_affected == 1)
}

/// A timeline entry of the order (a state change or tracking event), to insert in
/// the transaction or guarded write that makes the change.
pub fn timeline_row(
    order_id: &str,
    kind: &str,
    tracking_kind: &str,
    detail: &str,
    state: &str,
    at: DateTime<Utc>,
) -> order_event::ActiveModel {
    order_event::ActiveModel {
        id: Set(new_id()),
        order_id: Set(order_id.to_owned()),
        kind: Set(kind.to_owned()),
        tracking_kind: Set(tracking_kind.to_owned()),
        detail: Set(detail.chars().take(300).collect()),
        state: Set(state.to_owned()),
        occurred_at: Set(at),
    }
}

/// The timeline, in the order things happened (then in the order recorded).
pub async fn events_of(conn: &impl ConnectionTrait, order_id: &str) -> ServiceResult<Vec<order_event::Model>> {
    Ok(order_event::Entity::find()
        .filter(order_event::Column::OrderId.eq(order_id))
        .order_by_asc(order_event::Column::OccurredAt)
        .order_by_asc(order_event::Column::Id)
        .all(conn)
        .await?)
}

/// Filters of the order list.
#[derive(Debug, Default, Clone)]
pub struct OrderFilter {
    pub member_id: Option<String>,
    pub partner_id: Option<String>,
    pub state: Option<String>,
    pub created_from: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
}

/// Orders newest first (ids are UUID v7).
pub async fn list_orders(
    conn: &impl ConnectionTrait,
    page: &Page,
    f: &OrderFilter,
) -> ServiceResult<Vec<order::Model>> {
    let mut query = order::Entity::find()
        .order_by_desc(order::Column::Id)
        .limit(page.fetch_limit());
    if let Some(after) = &page.after {
        query = query.filter(order::Column::Id.lt(after.as_str()));
    }
    if let Some(m) = &f.member_id {
        query = query.filter(order::Column::MemberId.eq(m.as_str()));
    }
    if let Some(p) = &f.partner_id {
        query = query.filter(order::Column::PartnerId.eq(p.as_str()));
    }
    if let Some(s) = &f.state {
        query = query.filter(order::Column::State.eq(s.as_str()));
    }
    if let Some(from) = f.created_from {
        query = query.filter(order::Column::CreatedAt.gte(from));
    }
    if let Some(before) = f.created_before {
        query = query.filter(order::Column::CreatedAt.lt(before));
    }
    Ok(query.all(conn).await?)
}

/// Unpaid orders whose payment window closed at `as_of`.
pub async fn overdue_unpaid(
    conn: &impl ConnectionTrait,
    as_of: DateTime<Utc>,
    limit: u64,
) -> ServiceResult<Vec<String>> {
    Ok(order::Entity::find()
        .select_only()
        .column(order::Column::Id)
        .filter(order::Column::State.eq("pending_payment"))
        .filter(order::Column::PaymentDueAt.lte(as_of))
        .order_by_asc(order::Column::PaymentDueAt)
        .limit(limit)
        .into_tuple::<String>()
        .all(conn)
        .await?)
}

pub async fn insert_return(
    conn: &impl ConnectionTrait,
    model: order_return::Model,
    lines: Vec<return_line::Model>,
) -> ServiceResult<()> {
    order_return::ActiveModel::from(model).insert(conn).await?;
    for l in lines {
        return_line::ActiveModel::from(l).insert(conn).await?;
    }
    Ok(())
}

pub async fn find_return(conn: &impl ConnectionTrait, order_id: &str, id: &str) -> ServiceResult<Option<ReturnView>> {
    let Some(ret) = order_return::Entity::find_by_id(id.to_owned())
        .filter(order_return::Column::OrderId.eq(order_id))
        .one(conn)
        .await?
    else {
        return Ok(None);
    };
    let lines = return_line::Entity::find()
        .filter(return_line::Column::ReturnId.eq(id))
        .order_by_asc(return_line::Column::SkuCode)
        .all(conn)
        .await?;
    Ok(Some(ReturnView { ret, lines }))
}

/// Moves a return from `from` to `to`. True when this call made the change.
pub async fn return_transition(
    conn: &impl ConnectionTrait,
    id: &str,
    from: &str,
    to: &str,
    now: DateTime<Utc>,
) -> ServiceResult<bool> {
    let r = order_return::Entity::update_many()
        .col_expr(order_return::Column::State, Expr::value(to))
        .col_expr(order_return::Column::UpdatedAt, Expr::value(now))
        .filter(order_return::Column::Id.eq(id))
        .filter(order_return::Column::State.eq(from))
        .exec(conn)
        .await?;
    Ok(r.rows_affected == 1)
}

pub async fn mark_damaged(conn: &impl ConnectionTrait, return_id: &str, sku: &str) -> ServiceResult<()> {
    return_line::Entity::update_many()
        .col_expr(return_line::Column::Damaged, Expr::value(true))
        .filter(return_line::Column::ReturnId.eq(return_id))
        .filter(return_line::Column::SkuCode.eq(sku))
        .exec(conn)
        .await?;
    Ok(())
}

/// Counts units into a return if no more come back than were bought.
pub async fn add_returned(
    conn: &impl ConnectionTrait,
    order_id: &str,
    sku: &str,
    quantity: i64,
) -> ServiceResult<bool> {
    let r = line::Entity::update_many()
        .col_expr(
            line::Column::ReturnedQuantity,
            Expr::col(line::Column::ReturnedQuantity).add(quantity),
        )
        .filter(line::Column::OrderId.eq(order_id))
        .filter(line::Column::SkuCode.eq(sku))
        .filter(
            Expr::col(line::Column::ReturnedQuantity)
                .add(quantity)
                .lte(Expr::col(line::Column::Quantity)),
        )
        .exec(conn)
        .await?;
    Ok(r.rows_affected == 1)
}

/// Stores the one rating of an order; FAILED_PRECONDITION if it was rated before.
pub async fn insert_rating(conn: &impl ConnectionTrait, model: rating::Model) -> ServiceResult<()> {
    rating::ActiveModel::from(model).insert(conn).await.map_err(|e| {
        if retail_kit::db::is_unique_violation(&e) {
            ServiceError::FailedPrecondition("the order was already rated".into())
        } else {
            e.into()
        }
    })?;
    Ok(())
}

/// States of [`stock_work`].
pub mod work_state {
    pub const PENDING: &str = "pending";
    pub const DONE: &str = "done";
    pub const FAILED: &str = "failed";
}

/// The id of the stock work a cancellation of `order_id` owes catalog.
pub fn cancel_work_id(order_id: &str) -> String {
    format!("cancel:{order_id}")
}

/// The id of the stock work a received return owes catalog.
pub fn return_work_id(return_id: &str) -> String {
    format!("return:{return_id}")
}

/// The stock work a cancellation of `order_id` owes catalog.
pub fn cancel_work(order_id: &str, at: DateTime<Utc>) -> stock_work::ActiveModel {
    new_work(cancel_work_id(order_id), order_id, "cancel", "", at)
}

/// The stock work a received return owes catalog.
pub fn return_work(order_id: &str, return_id: &str, at: DateTime<Utc>) -> stock_work::ActiveModel {
    new_work(return_work_id(return_id), order_id, "return", return_id, at)
}

fn new_work(id: String, order_id: &str, kind: &str, return_id: &str, at: DateTime<Utc>) -> stock_work::ActiveModel {
    stock_work::ActiveModel::from(stock_work::Model {
        id,
        order_id: order_id.to_owned(),
        kind: kind.to_owned(),
        return_id: return_id.to_owned(),
        state: work_state::PENDING.into(),
        attempts: 0,
        last_error: String::new(),
        created_at: at,
        updated_at: at,
    })
}

pub async fn find_work(conn: &impl ConnectionTrait, id: &str) -> ServiceResult<Option<stock_work::Model>> {
    Ok(stock_work::Entity::find_by_id(id.to_owned()).one(conn).await?)
}

/// Pending work, least recently tried first.
pub async fn pending_work(conn: &impl ConnectionTrait, limit: u64) -> ServiceResult<Vec<stock_work::Model>> {
    Ok(stock_work::Entity::find()
        .filter(stock_work::Column::State.eq(work_state::PENDING))
        .order_by_asc(stock_work::Column::UpdatedAt)
        .limit(limit)
        .all(conn)
        .await?)
}

/// Ends pending work as `state` (done, or failed with `error`); counts an attempt
/// that left it pending. Work already ended stays as it is.
pub async fn end_work(
    conn: &impl ConnectionTrait,
    id: &str,
    state: &str,
    error: &str,
    at: DateTime<Utc>,
) -> ServiceResult<()> {
    let error: String = error.chars().take(500).collect();
    stock_work::Entity::update_many()
        .col_expr(stock_work::Column::State, Expr::value(state))
        .col_expr(
            stock_work::Column::Attempts,
            Expr::col(stock_work::Column::Attempts).add(1),
        )
        .col_expr(stock_work::Column::LastError, Expr::value(error))
        .col_expr(stock_work::Column::UpdatedAt, Expr::value(at))
        .filter(stock_work::Column::Id.eq(id))
        .filter(stock_work::Column::State.eq(work_state::PENDING))
        .exec(conn)
        .await?;
    Ok(())
}
