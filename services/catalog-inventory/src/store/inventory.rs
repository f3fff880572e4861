//! Warehouses, stock and reservations.
//!
//! Stock changes through [`change_stock`], one conditional UPDATE that moves units
//! between the parts of a row and refuses (0 rows) when any part would go below
//! zero, or through [`stock_update`] inside a guarded write, where the table's CHECK
//! constraints refuse the same and undo the whole write. Under PostgreSQL's row locks
//! either is checked on the newest row version, so two reservations racing for the
//! last unit cannot both pass; SQLite writers are serialised (`BEGIN IMMEDIATE`).
//! The CHECK constraints also hold the formula `total = sellable + reserved +
//! unsellable` whatever the code does.

use chrono::{DateTime, Utc};
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::paging::Page;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, RelationTrait,
};

use super::{allocation, new_id, reservation, stock, stock_movement, warehouse};
use crate::domain::stock::{MovementKind, ReservationState};

pub async fn insert_warehouse(conn: &impl ConnectionTrait, model: warehouse::Model) -> ServiceResult<()> {
    let code = model.code.clone();
    warehouse::ActiveModel::from(model).insert(conn).await.map_err(|e| {
        if retail_kit::db::is_unique_violation(&e) {
            ServiceError::AlreadyExists(format!("warehouse {code} already exists"))
        } else {
            e.into()
        }
    })?;
    Ok(())
}

/// Every warehouse by priority, then code.
pub async fn warehouses(conn: &impl ConnectionTrait) -> ServiceResult<Vec<warehouse::Model>> {
    Ok(warehouse::Entity::find()
        .order_by_asc(warehouse::Column::Priority)
        .order_by_asc(warehouse::Column::Code)
        .all(conn)
        .await?)
}

pub async fn find_warehouse(conn: &impl ConnectionTrait, code: &str) -> ServiceResult<Option<warehouse::Model>> {
    Ok(warehouse::Entity::find_by_id(code.to_owned()).one(conn).await?)
}

/// Signed changes of the parts of one stock row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delta {
    pub sellable: i64,
    pub reserved: i64,
    pub unsellable: i64,
}

impl Delta {
    pub fn total(&self) -> i64 {
        self.sellable + self.reserved + self.unsellable
    }
}

/// Creates the (empty) stock row of a SKU in a warehouse if there is none.
pub async fn ensure_stock_row(
    conn: &impl ConnectionTrait,
    sku_code: &str,
    warehouse_code: &str,
    now: DateTime<Utc>,
) -> ServiceResult<()> {
    stock::Entity::insert(stock::ActiveModel {
        sku_code: Set(sku_code.to_owned()),
        warehouse_code: Set(warehouse_code.to_owned()),
        total: Set(0),
        sellable: Set(0),
        reserved: Set(0),
        unsellable: Set(0),
        updated_at: Set(now),
    })
    .on_conflict(
        OnConflict::columns([stock::Column::SkuCode, stock::Column::WarehouseCode])
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

/// Applies `delta` to one stock row if no part goes below zero. Returns false (and
/// changes nothing) when it would, or when there is no such row.
pub async fn change_stock(
    conn: &impl ConnectionTrait,
    sku_code: &str,
    warehouse_code: &str,
    delta: Delta,
    now: DateTime<Utc>,
) -> ServiceResult<bool> {
    use stock::Column as C;
    let mut update = stock_update(sku_code, warehouse_code, delta, now);
    // Only the parts that shrink need a guard.
    for (col, d) in [
        (C::Sellable, delta.sellable),
        (C::Reserved, delta.reserved),
        (C::Unsellable, delta.unsellable),
    ] {
        if d < 0 {
            update = update.filter(col.gte(-d));
        }
    }
    Ok(update.exec(conn).await?.rows_affected == 1)
}

/// The update of [`change_stock`] without its guards: for a
/// [`retail_kit::db::GuardedWrite`], where the stock table's CHECK constraints refuse
/// (and so undo) a change that would turn a part negative.
pub fn stock_update(
    sku_code: &str,
    warehouse_code: &str,
    delta: Delta,
    now: DateTime<Utc>,
) -> sea_orm::UpdateMany<stock::Entity> {
    use stock::Column as C;
    stock::Entity::update_many()
        .col_expr(C::Total, Expr::col(C::Total).add(delta.total()))
        .col_expr(C::Sellable, Expr::col(C::Sellable).add(delta.sellable))
        .col_expr(C::Reserved, Expr::col(C::Reserved).add(delta.reserved))
        .col_expr(C::Unsellable, Expr::col(C::Unsellable).add(delta.unsellable))
        .col_expr(C::UpdatedAt, Expr::value(now))
        .filter(C::SkuCode.eq(sku_code))
        .filter(C::WarehouseCode.eq(warehouse_code))
}

pub async fn find_stock(
    conn: &impl ConnectionTrait,
    sku_code: &str,
    warehouse_code: &str,
) -> ServiceResult<Option<stock::Model>> {
    Ok(
        stock::Entity::find_by_id((sku_code.to_owned(), warehouse_code.to_owned()))
            .one(conn)
            .await?,
    )
}

/// Stock rows of a SKU, by warehouse code.
pub async fn stock_of(conn: &impl ConnectionTrait, sku_code: &str) -> ServiceResult<Vec<stock::Model>> {
    Ok(stock::Entity::find()
        .filter(stock::Column::SkuCode.eq(sku_code))
        .order_by_asc(stock::Column::WarehouseCode)
        .all(conn)
        .await?)
}

/// Sellable stock of one SKU in one warehouse, with the warehouse's priority.
#[derive(Debug, Clone, sea_orm::FromQueryResult)]
pub struct SellableRow {
    pub sku_code: String,
    pub warehouse_code: String,
    pub sellable: i64,
    pub priority: i32,
}

/// Rows with sellable stock of any of `sku_codes`, with their warehouses' priorities
/// (one round trip: reservations plan from it).
pub async fn sellable_rows(conn: &impl ConnectionTrait, sku_codes: &[String]) -> ServiceResult<Vec<SellableRow>> {
    Ok(stock::Entity::find()
        .select_only()
        .column(stock::Column::SkuCode)
        .column(stock::Column::WarehouseCode)
        .column(stock::Column::Sellable)
        .column_as(warehouse::Column::Priority, "priority")
        .join(sea_orm::JoinType::InnerJoin, stock::Relation::Warehouse.def())
        .filter(stock::Column::SkuCode.is_in(sku_codes.iter().cloned()))
        .filter(stock::Column::Sellable.gt(0))
        .into_model::<SellableRow>()
        .all(conn)
        .await?)
}

/// An audit row of a stock change.
#[derive(Debug, Clone)]
pub struct Movement<'a> {
    pub sku_code: &'a str,
    pub warehouse_code: &'a str,
    pub kind: MovementKind,
    pub delta: Delta,
    pub reason: &'a str,
    pub actor: &'a str,
}

/// The audit row of `m`, made at `now`: written on its own ([`record_movement`]) or
/// with a [`retail_kit::db::GuardedWrite`], so that the row and the change it audits
/// commit together.
pub fn movement_row(m: Movement<'_>, now: DateTime<Utc>) -> stock_movement::ActiveModel {
    stock_movement::ActiveModel {
        id: Set(new_id()),
        sku_code: Set(m.sku_code.to_owned()),
        warehouse_code: Set(m.warehouse_code.to_owned()),
        kind: Set(m.kind.as_str().to_owned()),
        sellable_delta: Set(m.delta.sellable),
        reserved_delta: Set(m.delta.reserved),
        unsellable_delta: Set(m.delta.unsellable),
        reason: Set(m.reason.to_owned()),
        actor: Set(m.actor.to_owned()),
        created_at: Set(now),
    }
}

pub async fn record_movement(conn: &impl ConnectionTrait, m: Movement<'_>, now: DateTime<Utc>) -> ServiceResult<()> {
    movement_row(m, now).insert(conn).await?;
    Ok(())
}

/// Stock changes of a SKU, newest first (ids are UUID v7).
pub async fn movements(
    conn: &impl ConnectionTrait,
    sku_code: &str,
    page: &Page,
) -> ServiceResult<Vec<stock_movement::Model>> {
    let mut query = stock_movement::Entity::find()
        .filter(stock_movement::Column::SkuCode.eq(sku_code))
        .order_by_desc(stock_movement::Column::Id)
        .limit(page.fetch_limit());
    if let Some(after) = &page.after {
        query = query.filter(stock_movement::Column::Id.lt(after.as_str()));
    }
    Ok(query.all(conn).await?)
}

/// A reservation with its allocations in plan order.
#[derive(Debug, Clone)]
pub struct ReservationView {
    pub reservation: reservation::Model,
    pub allocations: Vec<allocation::Model>,
}

/// A reservation with its allocations, if it exists, in one query.
pub async fn find_reservation(conn: &impl ConnectionTrait, order_id: &str) -> ServiceResult<Option<ReservationView>> {
    let found = reservation::Entity::find_by_id(order_id.to_owned())
        .find_with_related(allocation::Entity)
        .order_by_asc(allocation::Column::Ordinal)
        .all(conn)
        .await?;
    Ok(found
        .into_iter()
        .next()
        .map(|(reservation, allocations)| ReservationView {
            reservation,
            allocations,
        }))
}

/// Moves a reservation from `from` to `to` if it is in `from` (and, with
/// `unexpired_at`, not expired at that time). True when this call made the change.
pub async fn transition(
    conn: &impl ConnectionTrait,
    order_id: &str,
    from: ReservationState,
    to: ReservationState,
    unexpired_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> ServiceResult<bool> {
    let update = transition_update(order_id, from, to, unexpired_at, now);
    Ok(update.exec(conn).await?.rows_affected == 1)
}

/// The update of [`transition`], for a [`retail_kit::db::GuardedWrite`].
pub fn transition_update(
    order_id: &str,
    from: ReservationState,
    to: ReservationState,
    unexpired_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> sea_orm::UpdateMany<reservation::Entity> {
    let mut update = reservation::Entity::update_many()
        .col_expr(reservation::Column::State, Expr::value(to.as_str()))
        .col_expr(reservation::Column::UpdatedAt, Expr::value(now))
        .filter(reservation::Column::OrderId.eq(order_id))
        .filter(reservation::Column::State.eq(from.as_str()));
    if let Some(at) = unexpired_at {
        update = update.filter(reservation::Column::ExpiresAt.gt(at));
    }
    update
}

/// Adds returned units to an allocation if no more come back than left.
pub async fn add_returned(
    conn: &impl ConnectionTrait,
    order_id: &str,
    sku_code: &str,
    warehouse_code: &str,
    quantity: i64,
) -> ServiceResult<bool> {
    use allocation::Column as C;
    let update = allocation::Entity::update_many()
        .col_expr(C::ReturnedQuantity, Expr::col(C::ReturnedQuantity).add(quantity))
        .filter(C::OrderId.eq(order_id))
        .filter(C::SkuCode.eq(sku_code))
        .filter(C::WarehouseCode.eq(warehouse_code))
        .filter(Expr::col(C::ReturnedQuantity).add(quantity).lte(Expr::col(C::Quantity)))
        .exec(conn)
        .await?;
    Ok(update.rows_affected == 1)
}

/// Active reservations whose time ran out at `as_of`, oldest first.
pub async fn overdue(conn: &impl ConnectionTrait, as_of: DateTime<Utc>, limit: u64) -> ServiceResult<Vec<String>> {
    Ok(reservation::Entity::find()
        .select_only()
        .column(reservation::Column::OrderId)
        .filter(reservation::Column::State.eq(ReservationState::Active.as_str()))
        .filter(reservation::Column::ExpiresAt.lte(as_of))
        .order_by_asc(reservation::Column::ExpiresAt)
        .limit(limit)
        .into_tuple::<String>()
        .all(conn)
        .await?)
}
