//! The gRPC adapter of inventory: warehouses, stock changes and reservations, and the
//! sweeper that releases reservations whose TTL ran out.
//!
//! A reservation is planned from a read of the stock ([`crate::domain::stock`]) and
//! applied in one transaction: the order id is claimed first (a racing replay waits
//! on it and then replays), then each allocation moves `sellable -> reserved` with a
//! conditional update. If another reservation took the stock since the read, the
//! transaction rolls back whole and the plan is made again; a line that cannot be
//! covered fails the reservation with FAILED_PRECONDITION and nothing is held.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prost::Message;
use retail_kit::auth::Principal;
use retail_kit::convert::{now, timestamp};
use retail_kit::db::GuardedWrite;
use retail_kit::error::{ServiceError, ServiceResult, Violations};
use retail_kit::events;
use retail_kit::idempotency::{self, IdempotencyKey};
use retail_kit::paging::Page;
use retail_proto::catalog as pb;
use retail_proto::catalog::inventory_service_server::InventoryService;
use retail_proto::events as ev;
use sea_orm::{DatabaseTransaction, QueryTrait};
use tonic::Request;

use crate::api::{READ, Rpc, State, first_violation, ok, sku_name};
use crate::domain::codes::{SkuCode, WarehouseCode};
use crate::domain::stock::{self as plan, Available};
use crate::store::inventory::{self as db, Delta, Movement, ReservationView, state};
use crate::store::{self, allocation, reservation, warehouse};

pub const WRITE: &str = "inventory.write";
pub const RESERVE: &str = "inventory.reserve";

/// Units per change, at most.
const MAX_UNITS: i64 = 1_000_000;
/// Units per reserved line, at most.
const MAX_LINE_UNITS: i64 = 10_000;
/// Lines per reservation, at most.
const MAX_LINES: usize = 200;
/// How often a reservation is planned again when others took the stock first.
const PLAN_ATTEMPTS: usize = 20;
/// Reservations the sweeper releases per pass, at most.
const SWEEP_BATCH: u64 = 500;
/// The actor of the movements of expired reservations: no principal asked for them.
pub const SWEEPER: &str = "reservation-sweeper";

/// Reservations remembered for their commit, at most.
const HELD_CAPACITY: u64 = 20_000;
/// How long a reservation is remembered for its commit.
const HELD_FOR: Duration = Duration::from_secs(15 * 60);

/// The reservations this process made, by order id, so that committing one (most
/// often moments after) needs no read. A reservation's allocations never change and
/// its order id is never reused, and the commit's guarded write checks that it is
/// still active and unexpired; so a remembered view is either right or refused, and
/// a miss (another replica made it, or it was forgotten) reads it.
#[derive(Debug, Clone)]
pub struct HeldReservations(moka::sync::Cache<String, Arc<ReservationView>>);

impl HeldReservations {
    fn remember(&self, view: ReservationView) {
        self.0.insert(view.reservation.order_id.clone(), Arc::new(view));
    }

    /// The remembered reservation of `order`, forgotten as it is taken.
    fn take(&self, order: &str) -> Option<ReservationView> {
        self.0.remove(order).map(Arc::unwrap_or_clone)
    }

    /// Forgets the reservation of `order` (its commit will read it).
    pub fn forget(&self, order: &str) {
        self.0.invalidate(order);
    }
}

impl Default for HeldReservations {
    fn default() -> Self {
        Self(
            moka::sync::Cache::builder()
                .max_capacity(HELD_CAPACITY)
                .time_to_live(HELD_FOR)
                .build(),
        )
    }
}

#[derive(Debug, Clone)]
pub struct InventoryApi {
    state: Arc<State>,
}

impl InventoryApi {
    pub fn new(state: Arc<State>) -> Self {
        Self { state }
    }
}

fn warehouse_to_pb(w: &warehouse::Model) -> pb::Warehouse {
    pb::Warehouse {
        name: format!("warehouses/{}", w.code),
        code: w.code.clone(),
        display_name: w.display_name.clone(),
        priority: w.priority,
    }
}

fn level_to_pb(s: &store::stock::Model) -> pb::StockLevel {
    pb::StockLevel {
        sku: format!("skus/{}", s.sku_code),
        warehouse: format!("warehouses/{}", s.warehouse_code),
        total: s.total,
        sellable: s.sellable,
        reserved: s.reserved,
        unsellable: s.unsellable,
    }
}

fn reservation_state(s: &str) -> i32 {
    (match s {
        state::ACTIVE => pb::ReservationState::Active,
        state::COMMITTED => pb::ReservationState::Committed,
        state::RELEASED => pb::ReservationState::Released,
        state::EXPIRED => pb::ReservationState::Expired,
        _ => pb::ReservationState::Unspecified,
    }) as i32
}

fn reservation_to_pb(v: &ReservationView) -> pb::Reservation {
    let r = &v.reservation;
    let lines: Vec<(String, i64)> = serde_json::from_str(&r.lines_json).unwrap_or_default();
    pb::Reservation {
        name: format!("reservations/{}", r.order_id),
        order_id: r.order_id.clone(),
        lines: lines
            .into_iter()
            .map(|(sku, quantity)| pb::ReservationLine {
                sku: format!("skus/{sku}"),
                quantity,
            })
            .collect(),
        allocations: v
            .allocations
            .iter()
            .map(|a| pb::Allocation {
                sku: format!("skus/{}", a.sku_code),
                warehouse: format!("warehouses/{}", a.warehouse_code),
                quantity: a.quantity,
                returned_quantity: a.returned_quantity,
            })
            .collect(),
        state: reservation_state(&r.state),
        expire_time: Some(timestamp(r.expires_at)),
        create_time: Some(timestamp(r.created_at)),
        update_time: Some(timestamp(r.updated_at)),
    }
}

fn units(v: &[allocation::Model]) -> Vec<ev::ReservedUnits> {
    v.iter()
        .map(|a| ev::ReservedUnits {
            sku_code: a.sku_code.clone(),
            warehouse_code: a.warehouse_code.clone(),
            quantity: a.quantity,
        })
        .collect()
}

/// An order id: 1-128 printable ASCII characters.
fn order_id(field: &str, raw: &str) -> ServiceResult<String> {
    if raw.is_empty() || raw.len() > 128 || !raw.chars().all(|c| c.is_ascii_graphic()) {
        return Err(ServiceError::invalid(
            field,
            "must be 1-128 printable ASCII characters without spaces",
        ));
    }
    Ok(raw.to_owned())
}

fn reservation_name(field: &str, name: &str) -> ServiceResult<String> {
    let id = name
        .strip_prefix("reservations/")
        .ok_or_else(|| ServiceError::invalid(field, "must be reservations/{order_id}"))?;
    order_id(field, id)
}

fn warehouse_name(field: &str, name: &str) -> ServiceResult<WarehouseCode> {
    WarehouseCode::from_resource_name(name).map_err(|e| ServiceError::invalid(field, e))
}

fn bucket_delta(field: &str, bucket: i32, delta: i64) -> ServiceResult<Delta> {
    match pb::StockBucket::try_from(bucket) {
        Ok(pb::StockBucket::Sellable) => Ok(Delta {
            sellable: delta,
            ..Delta::default()
        }),
        Ok(pb::StockBucket::Unsellable) => Ok(Delta {
            unsellable: delta,
            ..Delta::default()
        }),
        _ => Err(ServiceError::invalid(field, "must be sellable or unsellable")),
    }
}

/// The marker error that makes a stale plan roll back its transaction.
const STALE_PLAN: &str = "stale reservation plan";

impl State {
    async fn sku_must_exist(&self, code: &SkuCode) -> ServiceResult<()> {
        match store::find_sku(&self.db, code.as_str()).await? {
            Some(_) => Ok(()),
            None => Err(ServiceError::not_found("sku", code.resource_name())),
        }
    }

    async fn warehouse_must_exist(&self, code: &WarehouseCode) -> ServiceResult<()> {
        match db::find_warehouse(&self.db, code.as_str()).await? {
            Some(_) => Ok(()),
            None => Err(ServiceError::not_found("warehouse", code.resource_name())),
        }
    }

    /// Applies a stock change with its audit row and event in one transaction.
    #[allow(clippy::too_many_arguments)]
    async fn change_stock(
        &self,
        key: Option<&IdempotencyKey>,
        sku: &SkuCode,
        wh: &WarehouseCode,
        kind: &'static str,
        delta: Delta,
        reason: &str,
        actor: &str,
    ) -> ServiceResult<pb::StockLevel> {
        self.sku_must_exist(sku).await?;
        self.warehouse_must_exist(wh).await?;
        let level = idempotency::execute(&self.db, key, Clone::clone, |txn| {
            let (sku, wh, reason, actor) = (sku.clone(), wh.clone(), reason.to_owned(), actor.to_owned());
            Box::pin(async move {
                let now = now();
                db::ensure_stock_row(txn, sku.as_str(), wh.as_str(), now).await?;
                if !db::change_stock(txn, sku.as_str(), wh.as_str(), delta, now).await? {
                    let have = db::find_stock(txn, sku.as_str(), wh.as_str()).await?;
                    let (sellable, unsellable) = have.map(|h| (h.sellable, h.unsellable)).unwrap_or_default();
                    return Err(ServiceError::FailedPrecondition(format!(
                        "stock of {} in {} cannot go below zero (sellable {sellable}, unsellable {unsellable})",
                        sku.resource_name(),
                        wh.resource_name()
                    )));
                }
                db::record_movement(
                    txn,
                    Movement {
                        sku_code: sku.as_str(),
                        warehouse_code: wh.as_str(),
                        kind,
                        delta,
                        reason: &reason,
                        actor: &actor,
                    },
                    now,
                )
                .await?;
                let row = db::find_stock(txn, sku.as_str(), wh.as_str())
                    .await?
                    .ok_or_else(|| ServiceError::internal(anyhow::anyhow!("stock row vanished")))?;
                publish_stock_changed(txn, kind, &row).await?;
                Ok(level_to_pb(&row))
            })
        })
        .await?;
        self.log.committed();
        Ok(level)
    }

    /// Reserves `lines` for `order`, or returns the reservation made before for it;
    /// `actor` is audited on the movements of a new one.
    pub async fn reserve(
        &self,
        order: &str,
        lines: &[(SkuCode, i64)],
        ttl: chrono::Duration,
        actor: &str,
    ) -> ServiceResult<pb::Reservation> {
        let mut canonical: Vec<(String, i64)> = lines.iter().map(|(c, q)| (c.as_str().to_owned(), *q)).collect();
        canonical.sort();
        let fingerprint = serde_json::to_vec(&canonical).unwrap_or_default();
        let asked: Vec<(String, i64)> = lines.iter().map(|(c, q)| (c.as_str().to_owned(), *q)).collect();
        let lines_json = serde_json::to_string(&asked).unwrap_or_else(|_| "[]".into());
        for attempt in 0..PLAN_ATTEMPTS {
            // A repeated request is told apart by the reservation's key when it is
            // inserted (below), or, if its stock is gone meanwhile, before refusing:
            // the first attempt of a new order costs no lookup.
            let allocations = match self.plan(lines).await {
                Ok(allocations) => allocations,
                Err(err) => {
                    if let Some(existing) = db::find_reservation(&self.db, order).await? {
                        return replay(existing, &fingerprint);
                    }
                    return Err(err);
                }
            };
            let now = now();
            let model = reservation::Model {
                order_id: order.to_owned(),
                fingerprint: fingerprint.clone(),
                lines_json: lines_json.clone(),
                state: state::ACTIVE.to_owned(),
                expires_at: now + ttl,
                created_at: now,
                updated_at: now,
            };
            match apply_plan(&self.db, model, allocations, actor).await {
                Ok(view) => {
                    self.log.committed();
                    let reservation = reservation_to_pb(&view);
                    self.held.remember(view);
                    return Ok(reservation);
                }
                Err(ServiceError::Aborted(msg)) if msg == STALE_PLAN => continue,
                // A twin claimed the order id first: replay it.
                Err(ServiceError::AlreadyExists(_)) => {
                    if let Some(existing) = db::find_reservation(&self.db, order).await? {
                        return replay(existing, &fingerprint);
                    }
                }
                // Contention: plan again from fresh stock.
                Err(ServiceError::Aborted(_)) => {
                    tokio::time::sleep(Duration::from_millis(2 * attempt as u64 + 1)).await;
                    continue;
                }
                Err(other) => return Err(other),
            }
        }
        Err(ServiceError::Aborted(
            "stock kept changing while reserving; retry".into(),
        ))
    }

    /// Plans every line from the current stock. A line that cannot be covered is
    /// NOT_FOUND for an unknown SKU, else FAILED_PRECONDITION.
    async fn plan(&self, lines: &[(SkuCode, i64)]) -> ServiceResult<Vec<plan::Allocation>> {
        let codes: Vec<String> = lines.iter().map(|(c, _)| c.as_str().to_owned()).collect();
        let rows = db::sellable_rows(&self.db, &codes).await?;
        let mut out = Vec::new();
        for (code, quantity) in lines {
            let available: Vec<Available> = rows
                .iter()
                .filter(|r| r.sku_code == code.as_str())
                .filter_map(|r| {
                    Some(Available {
                        warehouse: WarehouseCode::parse(&r.warehouse_code).ok()?,
                        priority: r.priority,
                        sellable: r.sellable,
                    })
                })
                .collect();
            match plan::allocate_line(code, *quantity, &available) {
                Ok(allocs) => out.extend(allocs),
                Err(short) => {
                    self.sku_must_exist(code).await?;
                    return Err(ServiceError::FailedPrecondition(format!(
                        "not enough sellable stock of {}: {} requested, {} available",
                        short.sku.resource_name(),
                        short.requested,
                        short.available
                    )));
                }
            }
        }
        Ok(out)
    }

    async fn reservation(&self, order: &str) -> ServiceResult<ReservationView> {
        db::find_reservation(&self.db, order)
            .await?
            .ok_or_else(|| ServiceError::not_found("reservation", format!("reservations/{order}")))
    }

    /// Ships a reservation's units out: its state change, the stock moves, their
    /// audit rows and `ReservationCommitted` in one guarded write (allocations never
    /// change while a reservation is active, so they come from before it: remembered
    /// from the reserve, else read).
    pub async fn commit(&self, order: &str, actor: &str) -> ServiceResult<pb::Reservation> {
        let view = match self.held.take(order) {
            Some(held) => held,
            None => self.reservation(order).await?,
        };
        let now = now();
        let current = if view.reservation.state == state::ACTIVE {
            let out = view.allocations.iter().map(|a| {
                let delta = Delta {
                    reserved: -a.quantity,
                    ..Delta::default()
                };
                (a.sku_code.as_str(), a.warehouse_code.as_str(), delta)
            });
            let writes = with_stock_moves(
                GuardedWrite::new(
                    db::transition_update(order, state::ACTIVE, state::COMMITTED, Some(now), now).into_query(),
                ),
                out,
                now,
            );
            let event = ev::ReservationCommitted {
                order_id: order.to_owned(),
                units: units(&view.allocations),
            };
            let audit = view.allocations.iter().map(|a| {
                let delta = Delta {
                    reserved: -a.quantity,
                    ..Delta::default()
                };
                db::movement_row(movement(a, "commit", delta, order, actor), now)
            });
            let writes = writes.insert(audit)?.insert([events::outbox_row(
                "retail.events.v1.ReservationCommitted",
                order,
                event.encode_to_vec(),
            )])?;
            if idempotency::apply(&self.db, &writes).await? {
                self.log.committed();
                let committed = ReservationView {
                    reservation: reservation::Model {
                        state: state::COMMITTED.into(),
                        updated_at: now,
                        ..view.reservation
                    },
                    allocations: view.allocations,
                };
                return Ok(reservation_to_pb(&committed));
            }
            // The state or expiry changed since the read above.
            self.reservation(order).await?
        } else {
            view
        };
        // Not committed by this call: already committed (by an earlier or racing
        // call: that is this call's outcome too), or it cannot be.
        match current.reservation.state.as_str() {
            state::COMMITTED => Ok(reservation_to_pb(&current)),
            state::ACTIVE => Err(ServiceError::FailedPrecondition(
                "reservation expired and cannot be committed".into(),
            )),
            other => Err(ServiceError::FailedPrecondition(format!(
                "reservation is {other} and cannot be committed"
            ))),
        }
    }

    /// Gives an active reservation's units back to sellable, audited: on request
    /// (`released`) or by the sweeper (`expired`). Returns false when it was no longer
    /// active.
    async fn give_back(
        txn: &DatabaseTransaction,
        view: &ReservationView,
        to: &'static str,
        now: DateTime<Utc>,
        actor: &str,
    ) -> ServiceResult<bool> {
        let order = &view.reservation.order_id;
        if !db::transition(txn, order, state::ACTIVE, to, None, now).await? {
            return Ok(false);
        }
        for a in &view.allocations {
            let back = Delta {
                sellable: a.quantity,
                reserved: -a.quantity,
                unsellable: 0,
            };
            move_reserved(txn, a, back, now).await?;
            let kind = if to == state::EXPIRED { "expire" } else { "release" };
            db::record_movement(txn, movement(a, kind, back, order, actor), now).await?;
        }
        let units = units(&view.allocations);
        if to == state::EXPIRED {
            let event = ev::ReservationExpired {
                order_id: order.clone(),
                units,
            };
            events::publish(txn, "retail.events.v1.ReservationExpired", order, &event).await?;
        } else {
            let event = ev::ReservationReleased {
                order_id: order.clone(),
                units,
            };
            events::publish(txn, "retail.events.v1.ReservationReleased", order, &event).await?;
        }
        Ok(true)
    }

    /// Releases a reservation before commit.
    pub async fn release(&self, order: &str, actor: &str) -> ServiceResult<pb::Reservation> {
        self.held.forget(order);
        let view = idempotency::transaction(&self.db, |txn| {
            let (order, actor) = (order.to_owned(), actor.to_owned());
            Box::pin(async move {
                let view = db::find_reservation(txn, &order)
                    .await?
                    .ok_or_else(|| ServiceError::not_found("reservation", format!("reservations/{order}")))?;
                match view.reservation.state.as_str() {
                    state::RELEASED | state::EXPIRED => return Ok(view),
                    state::COMMITTED => {
                        return Err(ServiceError::FailedPrecondition(
                            "reservation is committed; take goods back with ReturnStock".into(),
                        ));
                    }
                    _ => {}
                }
                Self::give_back(txn, &view, state::RELEASED, now(), &actor).await?;
                db::find_reservation(txn, &order)
                    .await?
                    .ok_or_else(|| ServiceError::internal(anyhow::anyhow!("reservation vanished")))
            })
        })
        .await?;
        self.log.committed();
        Ok(reservation_to_pb(&view))
    }

    /// Releases every active reservation whose TTL ran out at `as_of`; returns how
    /// many. The sweeper calls it periodically; tests call it with their own time.
    pub async fn expire_reservations(&self, as_of: DateTime<Utc>) -> ServiceResult<u64> {
        let mut expired = 0;
        loop {
            let due = db::overdue(&self.db, as_of, SWEEP_BATCH).await?;
            let batch = due.len() as u64;
            for order in due {
                let done = idempotency::transaction(&self.db, |txn| {
                    let order = order.clone();
                    Box::pin(async move {
                        match db::find_reservation(txn, &order).await? {
                            Some(view) if view.reservation.state == state::ACTIVE => {
                                Self::give_back(txn, &view, state::EXPIRED, as_of, SWEEPER).await
                            }
                            _ => Ok(false),
                        }
                    })
                })
                .await?;
                if done {
                    expired += 1;
                }
            }
            if batch < SWEEP_BATCH {
                break;
            }
        }
        if expired > 0 {
            tracing::info!(expired, "released expired reservations");
            self.log.committed();
        }
        Ok(expired)
    }

    /// Runs the sweeper until the task is aborted.
    pub fn spawn_sweeper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let state = self.clone();
        let every = Duration::from_secs(self.settings.inventory.sweep_every_secs.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(err) = state.expire_reservations(now()).await {
                    tracing::warn!(error = %err, "reservation sweep failed");
                }
            }
        })
    }
}

fn replay(existing: ReservationView, fingerprint: &[u8]) -> ServiceResult<pb::Reservation> {
    if existing.reservation.fingerprint != fingerprint {
        return Err(ServiceError::AlreadyExists(format!(
            "reservations/{} already holds other lines",
            existing.reservation.order_id
        )));
    }
    Ok(reservation_to_pb(&existing))
}

/// Holds the planned units and records the reservation, its allocations, their audit
/// rows and `ReservationCreated` in one guarded write. A plan that stock changed under
/// (a part would turn negative) is STALE_PLAN; a reservation that exists already is
/// ALREADY_EXISTS.
async fn apply_plan(
    conn: &sea_orm::DatabaseConnection,
    model: reservation::Model,
    allocations: Vec<plan::Allocation>,
    actor: &str,
) -> ServiceResult<ReservationView> {
    let now = model.created_at;
    let order = model.order_id.clone();
    let rows: Vec<allocation::Model> = allocations
        .iter()
        .enumerate()
        .map(|(i, a)| allocation::Model {
            order_id: order.clone(),
            sku_code: a.sku.as_str().to_owned(),
            warehouse_code: a.warehouse.as_str().to_owned(),
            ordinal: i as i32,
            quantity: a.quantity,
            returned_quantity: 0,
        })
        .collect();
    let event = ev::ReservationCreated {
        order_id: order.clone(),
        units: units(&rows),
        expire_time: Some(timestamp(model.expires_at)),
    };
    let holds = allocations.iter().map(|a| {
        let delta = Delta {
            sellable: -a.quantity,
            reserved: a.quantity,
            unsellable: 0,
        };
        (a.sku.as_str(), a.warehouse.as_str(), delta)
    });
    let writes = with_stock_moves(
        GuardedWrite::inserting(reservation::ActiveModel::from(model.clone()))?,
        holds,
        now,
    )
    .insert(rows.iter().cloned().map(allocation::ActiveModel::from))?
    .insert(rows.iter().map(|a| {
        let delta = Delta {
            sellable: -a.quantity,
            reserved: a.quantity,
            unsellable: 0,
        };
        db::movement_row(movement(a, "reserve", delta, &order, actor), now)
    }))?
    .insert([events::outbox_row(
        "retail.events.v1.ReservationCreated",
        &order,
        event.encode_to_vec(),
    )])?;
    // A twin that inserted the reservation first makes this a unique violation
    // (ALREADY_EXISTS), so stock is never held twice for one order.
    match idempotency::apply(conn, &writes).await {
        Ok(true) => Ok(ReservationView {
            reservation: model,
            allocations: rows,
        }),
        Ok(false) => Err(ServiceError::internal(anyhow::anyhow!(
            "inserting reservation {order} matched nothing"
        ))),
        Err(ServiceError::Internal(err))
            if err
                .downcast_ref::<sea_orm::DbErr>()
                .is_some_and(retail_kit::db::is_check_violation) =>
        {
            Err(ServiceError::Aborted(STALE_PLAN.into()))
        }
        Err(err) => Err(err),
    }
}

/// `writes` with stock moves, `(sku, warehouse, delta)`, in one order of stock rows
/// for every reservation and commit, so that concurrent ones lock rows alike.
fn with_stock_moves<'a>(
    mut writes: GuardedWrite,
    moves: impl IntoIterator<Item = (&'a str, &'a str, Delta)>,
    now: DateTime<Utc>,
) -> GuardedWrite {
    let mut moves: Vec<_> = moves.into_iter().collect();
    moves.sort_by_key(|(sku, warehouse, _)| (*sku, *warehouse));
    for (sku, warehouse, delta) in moves {
        writes = writes.update(db::stock_update(sku, warehouse, delta, now).into_query());
    }
    writes
}

/// The audit row of a change of an allocation's units, with the order as its reason.
fn movement<'a>(
    a: &'a allocation::Model,
    kind: &'static str,
    delta: Delta,
    order: &'a str,
    actor: &'a str,
) -> Movement<'a> {
    Movement {
        sku_code: &a.sku_code,
        warehouse_code: &a.warehouse_code,
        kind,
        delta,
        reason: order,
        actor,
    }
}

/// Moves an allocation's reserved units; the reservation's state change in the same
/// transaction guarantees they are still reserved, so a refusal is a broken invariant.
async fn move_reserved(
    txn: &DatabaseTransaction,
    a: &allocation::Model,
    delta: Delta,
    now: DateTime<Utc>,
) -> ServiceResult<()> {
    if db::change_stock(txn, &a.sku_code, &a.warehouse_code, delta, now).await? {
        Ok(())
    } else {
        Err(ServiceError::internal(anyhow::anyhow!(
            "reserved stock of {} in {} is lower than its reservations",
            a.sku_code,
            a.warehouse_code
        )))
    }
}

async fn publish_stock_changed(txn: &DatabaseTransaction, kind: &str, row: &store::stock::Model) -> ServiceResult<()> {
    events::publish(
        txn,
        "retail.events.v1.StockChanged",
        &row.sku_code,
        &ev::StockChanged {
            sku_code: row.sku_code.clone(),
            warehouse_code: row.warehouse_code.clone(),
            kind: kind.to_owned(),
            total: row.total,
            sellable: row.sellable,
            reserved: row.reserved,
            unsellable: row.unsellable,
        },
    )
    .await?;
    Ok(())
}

/// A quantity of 1-`max` units, or 0 with a violation: a refused value is never
/// computed with (negating `i64::MIN` overflows).
fn quantity(v: &mut Violations, field: &str, q: i64, max: i64) -> i64 {
    if q <= 0 || q > max {
        v.add(field, format!("must be 1-{max}"));
        return 0;
    }
    q
}

#[tonic::async_trait]
impl InventoryService for InventoryApi {
    #[tracing::instrument(skip_all)]
    async fn create_warehouse(&self, request: Request<pb::CreateWarehouseRequest>) -> Rpc<pb::Warehouse> {
        Principal::of(&request)?.require_scope(WRITE)?;
        let Some(w) = request.into_inner().warehouse else {
            return Err(ServiceError::invalid("warehouse", "is required").into());
        };
        let mut v = Violations::new();
        let code = v.field("warehouse.code", WarehouseCode::parse(&w.code));
        let display_name = v.text("warehouse.display_name", &w.display_name, 200, true);
        if !(0..=1000).contains(&w.priority) {
            v.add("warehouse.priority", "must be 0-1000");
        }
        v.finish()?;
        let Some(code) = code else {
            return Err(ServiceError::invalid("warehouse.code", "is required").into());
        };
        let model = warehouse::Model {
            code: code.as_str().to_owned(),
            display_name,
            priority: w.priority,
            created_at: now(),
        };
        db::insert_warehouse(&self.state.db, model.clone()).await?;
        ok(warehouse_to_pb(&model))
    }

    async fn list_warehouses(&self, request: Request<pb::ListWarehousesRequest>) -> Rpc<pb::ListWarehousesResponse> {
        Principal::of(&request)?.require_scope(READ)?;
        let rows = db::warehouses(&self.state.db).await?;
        ok(pb::ListWarehousesResponse {
            warehouses: rows.iter().map(warehouse_to_pb).collect(),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn receive_stock(&self, request: Request<pb::ReceiveStockRequest>) -> Rpc<pb::StockLevel> {
        let actor = {
            let principal = Principal::of(&request)?;
            principal.require_scope(WRITE)?;
            principal.subject.clone()
        };
        let req = request.into_inner();
        let key = IdempotencyKey::from_request("catalog.ReceiveStock", &actor, &req.request_id, &req)?;
        let mut v = Violations::new();
        let sku = v.check(sku_name("sku", &req.sku).map_err(first_violation));
        let wh = v.check(warehouse_name("warehouse", &req.warehouse).map_err(first_violation));
        let q = quantity(&mut v, "quantity", req.quantity, MAX_UNITS);
        let reference = v.text("reference", &req.reference, 200, false);
        v.finish()?;
        let (Some(sku), Some(wh)) = (sku, wh) else {
            return Err(ServiceError::invalid("sku", "is required").into());
        };
        let delta = Delta {
            sellable: q,
            ..Delta::default()
        };
        ok(self
            .state
            .change_stock(key.as_ref(), &sku, &wh, "receive", delta, &reference, &actor)
            .await?)
    }

    #[tracing::instrument(skip_all)]
    async fn adjust_stock(&self, request: Request<pb::AdjustStockRequest>) -> Rpc<pb::StockLevel> {
        let actor = {
            let principal = Principal::of(&request)?;
            principal.require_scope(WRITE)?;
            principal.subject.clone()
        };
        let req = request.into_inner();
        let mut v = Violations::new();
        let sku = v.check(sku_name("sku", &req.sku).map_err(first_violation));
        let wh = v.check(warehouse_name("warehouse", &req.warehouse).map_err(first_violation));
        // Compared without negating: `i64::MIN` has no positive counterpart.
        if req.delta == 0 || !(-MAX_UNITS..=MAX_UNITS).contains(&req.delta) {
            v.add("delta", format!("must be non-zero and at most {MAX_UNITS} either way"));
        }
        let delta = v.check(bucket_delta("bucket", req.bucket, req.delta).map_err(first_violation));
        let reason = v.text("reason", &req.reason, 200, true);
        v.finish()?;
        let (Some(sku), Some(wh), Some(delta)) = (sku, wh, delta) else {
            return Err(ServiceError::invalid("sku", "is required").into());
        };
        ok(self
            .state
            .change_stock(None, &sku, &wh, "adjust", delta, &reason, &actor)
            .await?)
    }

    #[tracing::instrument(skip_all)]
    async fn move_stock(&self, request: Request<pb::MoveStockRequest>) -> Rpc<pb::StockLevel> {
        let actor = {
            let principal = Principal::of(&request)?;
            principal.require_scope(WRITE)?;
            principal.subject.clone()
        };
        let req = request.into_inner();
        let mut v = Violations::new();
        let sku = v.check(sku_name("sku", &req.sku).map_err(first_violation));
        let wh = v.check(warehouse_name("warehouse", &req.warehouse).map_err(first_violation));
        let q = quantity(&mut v, "quantity", req.quantity, MAX_UNITS);
        let delta = match pb::StockBucket::try_from(req.from_bucket) {
            Ok(pb::StockBucket::Sellable) => Some(Delta {
                sellable: -q,
                reserved: 0,
                unsellable: q,
            }),
            Ok(pb::StockBucket::Unsellable) => Some(Delta {
                sellable: q,
                reserved: 0,
                unsellable: -q,
            }),
            _ => {
                v.add("from_bucket", "must be sellable or unsellable");
                None
            }
        };
        let reason = v.text("reason", &req.reason, 200, true);
        v.finish()?;
        let (Some(sku), Some(wh), Some(delta)) = (sku, wh, delta) else {
            return Err(ServiceError::invalid("sku", "is required").into());
        };
        ok(self
            .state
            .change_stock(None, &sku, &wh, "move", delta, &reason, &actor)
            .await?)
    }

    async fn get_stock(&self, request: Request<pb::GetStockRequest>) -> Rpc<pb::SkuStock> {
        Principal::of(&request)?.require_scope(READ)?;
        let sku = sku_name("sku", &request.get_ref().sku)?;
        self.state.sku_must_exist(&sku).await?;
        let rows = db::stock_of(&self.state.db, sku.as_str()).await?;
        let mut totals = pb::StockLevel {
            sku: sku.resource_name(),
            ..Default::default()
        };
        for r in &rows {
            totals.total += r.total;
            totals.sellable += r.sellable;
            totals.reserved += r.reserved;
            totals.unsellable += r.unsellable;
        }
        ok(pb::SkuStock {
            sku: sku.resource_name(),
            levels: rows.iter().map(level_to_pb).collect(),
            totals: Some(totals),
        })
    }

    async fn list_stock_movements(
        &self,
        request: Request<pb::ListStockMovementsRequest>,
    ) -> Rpc<pb::ListStockMovementsResponse> {
        let principal = Principal::of(&request)?;
        principal.require_scope(READ)?;
        // The trail names orders (of every partner) and the staff who made each change,
        // and catalog cannot tell which orders are a partner's own.
        if principal.partner_scope().is_some() {
            return Err(ServiceError::PermissionDenied("the stock audit trail is not open to partners".into()).into());
        }
        let req = request.into_inner();
        let sku = sku_name("sku", &req.sku)?;
        let page = Page::parse(req.page_size, &req.page_token, sku.as_str())?;
        self.state.sku_must_exist(&sku).await?;
        let rows = db::movements(&self.state.db, sku.as_str(), &page).await?;
        let (rows, next_page_token) = page.finish(rows, |m| m.id.clone());
        ok(pb::ListStockMovementsResponse {
            movements: rows
                .into_iter()
                .map(|m| pb::StockMovement {
                    sku: format!("skus/{}", m.sku_code),
                    warehouse: format!("warehouses/{}", m.warehouse_code),
                    kind: m.kind,
                    sellable_delta: m.sellable_delta,
                    reserved_delta: m.reserved_delta,
                    unsellable_delta: m.unsellable_delta,
                    reason: m.reason,
                    actor: m.actor,
                    create_time: Some(timestamp(m.created_at)),
                })
                .collect(),
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn reserve_stock(&self, request: Request<pb::ReserveStockRequest>) -> Rpc<pb::Reservation> {
        let actor = {
            let principal = Principal::of(&request)?;
            principal.require_scope(RESERVE)?;
            principal.subject.clone()
        };
        let req = request.into_inner();
        let inv = &self.state.settings.inventory;
        let mut v = Violations::new();
        let order = v.check(order_id("order_id", &req.order_id).map_err(first_violation));
        if req.lines.is_empty() || req.lines.len() > MAX_LINES {
            v.add("lines", format!("1-{MAX_LINES} lines"));
        }
        let mut lines: Vec<(SkuCode, i64)> = Vec::new();
        for (i, l) in req.lines.iter().enumerate().take(MAX_LINES) {
            let code = v.check(sku_name(&format!("lines[{i}].sku"), &l.sku).map_err(first_violation));
            let q = quantity(&mut v, &format!("lines[{i}].quantity"), l.quantity, MAX_LINE_UNITS);
            if let Some(code) = code {
                if lines.iter().any(|(c, _)| *c == code) {
                    v.add(format!("lines[{i}].sku"), "is listed twice");
                } else {
                    lines.push((code, q));
                }
            }
        }
        let ttl_secs = match &req.ttl {
            None => Some(inv.reservation_ttl_secs as i64),
            Some(d)
                if d.seconds > 0
                    && (0..1_000_000_000).contains(&d.nanos)
                    && d.seconds as u64 <= inv.max_reservation_ttl_secs =>
            {
                Some(d.seconds)
            }
            Some(_) => {
                v.add("ttl", format!("must be 1-{} seconds", inv.max_reservation_ttl_secs));
                None
            }
        };
        v.finish()?;
        let (Some(order), Some(ttl_secs)) = (order, ttl_secs) else {
            return Err(ServiceError::invalid("order_id", "is required").into());
        };
        ok(self
            .state
            .reserve(&order, &lines, chrono::Duration::seconds(ttl_secs), &actor)
            .await?)
    }

    async fn get_reservation(&self, request: Request<pb::GetReservationRequest>) -> Rpc<pb::Reservation> {
        let principal = Principal::of(&request)?;
        principal.require_scope(READ)?;
        let order = reservation_name("name", &request.get_ref().name)?;
        // A reservation does not record whose order it is, so a partner cannot be told
        // its own from another's: to partners every reservation is NOT_FOUND, worded as
        // for one that does not exist.
        if principal.partner_scope().is_some() {
            return Err(ServiceError::not_found("reservation", format!("reservations/{order}")).into());
        }
        ok(reservation_to_pb(&self.state.reservation(&order).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn commit_reservation(&self, request: Request<pb::CommitReservationRequest>) -> Rpc<pb::Reservation> {
        let principal = Principal::of(&request)?;
        principal.require_scope(RESERVE)?;
        let order = reservation_name("name", &request.get_ref().name)?;
        ok(self.state.commit(&order, &principal.subject).await?)
    }

    #[tracing::instrument(skip_all)]
    async fn release_reservation(&self, request: Request<pb::ReleaseReservationRequest>) -> Rpc<pb::Reservation> {
        let principal = Principal::of(&request)?;
        principal.require_scope(RESERVE)?;
        let order = reservation_name("name", &request.get_ref().name)?;
        ok(self.state.release(&order, &principal.subject).await?)
    }

    #[tracing::instrument(skip_all)]
    async fn return_stock(&self, request: Request<pb::ReturnStockRequest>) -> Rpc<pb::Reservation> {
        let s = &self.state;
        let actor = {
            let principal = Principal::of(&request)?;
            principal.require_scope(RESERVE)?;
            principal.subject.clone()
        };
        let req = request.into_inner();
        let key = IdempotencyKey::from_request("catalog.ReturnStock", &actor, &req.request_id, &req)?;
        let mut v = Violations::new();
        let order = v.check(reservation_name("name", &req.name).map_err(first_violation));
        if req.lines.is_empty() || req.lines.len() > MAX_LINES {
            v.add("lines", format!("1-{MAX_LINES} lines"));
        }
        let mut lines: Vec<(SkuCode, i64)> = Vec::new();
        for (i, l) in req.lines.iter().enumerate().take(MAX_LINES) {
            let code = v.check(sku_name(&format!("lines[{i}].sku"), &l.sku).map_err(first_violation));
            let q = quantity(&mut v, &format!("lines[{i}].quantity"), l.quantity, MAX_LINE_UNITS);
            if let Some(code) = code {
                if lines.iter().any(|(c, _)| *c == code) {
                    v.add(format!("lines[{i}].sku"), "is listed twice");
                } else {
                    lines.push((code, q));
                }
            }
        }
        v.finish()?;
        let Some(order) = order else {
            return Err(ServiceError::invalid("name", "is required").into());
        };
        s.reservation(&order).await?;
        let damaged = req.damaged;
        let response = idempotency::execute(&s.db, key.as_ref(), Clone::clone, |txn| {
            let (order, lines, actor) = (order.clone(), lines.clone(), actor.clone());
            Box::pin(async move {
                let now = now();
                let view = db::find_reservation(txn, &order)
                    .await?
                    .ok_or_else(|| ServiceError::not_found("reservation", format!("reservations/{order}")))?;
                if view.reservation.state != state::COMMITTED {
                    return Err(ServiceError::FailedPrecondition(format!(
                        "reservation is {}; only shipped (committed) goods can come back",
                        view.reservation.state
                    )));
                }
                for (code, q) in &lines {
                    let shipped: Vec<(WarehouseCode, i64, i64)> = view
                        .allocations
                        .iter()
                        .filter(|a| a.sku_code == code.as_str())
                        .filter_map(|a| {
                            Some((
                                WarehouseCode::parse(&a.warehouse_code).ok()?,
                                a.quantity,
                                a.returned_quantity,
                            ))
                        })
                        .collect();
                    if shipped.is_empty() {
                        return Err(ServiceError::FailedPrecondition(format!(
                            "{} was not part of this order",
                            code.resource_name()
                        )));
                    }
                    let Some(spread) = plan::spread_return(*q, &shipped) else {
                        let open: i64 = shipped.iter().map(|(_, q, r)| q - r).sum();
                        return Err(ServiceError::FailedPrecondition(format!(
                            "{q} units of {} cannot come back: {open} shipped and not yet returned",
                            code.resource_name()
                        )));
                    };
                    for (wh, units) in spread {
                        if !db::add_returned(txn, &order, code.as_str(), wh.as_str(), units).await? {
                            return Err(ServiceError::FailedPrecondition(
                                "more units would come back than shipped".into(),
                            ));
                        }
                        let delta = if damaged {
                            Delta {
                                unsellable: units,
                                ..Delta::default()
                            }
                        } else {
                            Delta {
                                sellable: units,
                                ..Delta::default()
                            }
                        };
                        db::ensure_stock_row(txn, code.as_str(), wh.as_str(), now).await?;
                        if !db::change_stock(txn, code.as_str(), wh.as_str(), delta, now).await? {
                            return Err(ServiceError::internal(anyhow::anyhow!("returned stock refused")));
                        }
                        db::record_movement(
                            txn,
                            Movement {
                                sku_code: code.as_str(),
                                warehouse_code: wh.as_str(),
                                kind: "return",
                                delta,
                                reason: &order,
                                actor: &actor,
                            },
                            now,
                        )
                        .await?;
                        let row = db::find_stock(txn, code.as_str(), wh.as_str())
                            .await?
                            .ok_or_else(|| ServiceError::internal(anyhow::anyhow!("stock row vanished")))?;
                        publish_stock_changed(txn, "return", &row).await?;
                    }
                }
                let view = db::find_reservation(txn, &order)
                    .await?
                    .ok_or_else(|| ServiceError::internal(anyhow::anyhow!("reservation vanished")))?;
                Ok(reservation_to_pb(&view))
            })
        })
        .await?;
        s.log.committed();
        ok(response)
    }
}
